/// FNV-1a over 64 bits: equal inputs, equal fingerprints (probabilities of two runs, the shards of two
/// processes). Not a cryptographic hash.
public struct Fingerprint: Sendable {
    private var state: UInt64 = 0xcbf2_9ce4_8422_2325

    public init() {}

    public mutating func add(byte: UInt8) {
        state = (state ^ UInt64(byte)) &* 0x100_0000_01b3
    }

    /// The value's 8 bytes, low first.
    public mutating func add(_ value: Int) {
        var bits = UInt64(bitPattern: Int64(value))
        for _ in 0..<8 {
            add(byte: UInt8(truncatingIfNeeded: bits))
            bits >>= 8
        }
    }

    /// Each value's 4 bytes, low first.
    public mutating func add(_ values: [Float]) {
        for value in values {
            var bits = value.bitPattern
            for _ in 0..<4 {
                add(byte: UInt8(truncatingIfNeeded: bits))
                bits >>= 8
            }
        }
    }

    public var value: UInt64 { state }
    public var hex: String { String(state, radix: 16).leftPadded(to: 16) }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
