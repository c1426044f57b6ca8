import Testing

@testable import Core

/// The pack's copy loops (Sources/CHostCopy): every length and alignment the plain, AVX2 and streaming paths split on,
/// against a plain Swift reference, with poison around the destination.
@Suite struct HostCopyTests {
    /// Lengths either side of the vector widths (8 and 16 int32s, 4 int64s) and of the 64 KB streaming threshold.
    static let lengths = [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 33, 1000, 16_383, 16_384, 16_385, 40_001]

    struct Generator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state >> 11
        }
    }

    /// Runs `body` with a destination of `count` elements at `shift` bytes past a 64-byte boundary, poisoned before
    /// and after, and checks the poison afterwards.
    static func withDestination<T: FixedWidthInteger>(_: T.Type, count: Int, shift: Int,
                                                      _ body: (UnsafeMutablePointer<T>) -> Void) -> [T] {
        let poison: UInt8 = 0xA5
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: (count + 4) * MemoryLayout<T>.size + 128, alignment: 64)
        defer { bytes.deallocate() }
        let total = (count + 4) * MemoryLayout<T>.size + 128
        bytes.initializeMemory(as: UInt8.self, repeating: poison, count: total)
        let start = bytes + 64 + shift
        body(start.bindMemory(to: T.self, capacity: count))
        let guardBefore = UnsafeRawBufferPointer(start: bytes, count: 64 + shift)
        let end = 64 + shift + count * MemoryLayout<T>.size
        let guardAfter = UnsafeRawBufferPointer(start: bytes + end, count: total - end)
        #expect(guardBefore.allSatisfy { $0 == poison } && guardAfter.allSatisfy { $0 == poison },
                "wrote outside the destination (count \(count), shift \(shift))")
        return (0..<count).map { start.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self) }
    }

    @Test func int32CopiesAndFindsTheLargestAsUnsigned() {
        var random = Generator(state: 11)
        for count in Self.lengths {
            for shift in [0, 4, 12, 28, 2] {  // aligned, heads of 7, 5 and 1, and one that never aligns
                var source = (0..<count).map { _ in Int32(random.next() % 500_000) }
                // The largest value in the head, the vector body or the tail; sometimes a negative one.
                if count > 0 {
                    let at = [0, count / 2, count - 1][Int(random.next() % 3)]
                    source[at] = random.next() % 4 == 0 ? -Int32(random.next() % 1000) - 1 : 600_000
                }
                let expected = source.map { UInt32(bitPattern: $0) }.max() ?? 0
                var largest: UInt32 = 0
                let copied = Self.withDestination(Int32.self, count: count, shift: shift) { out in
                    largest = source.withUnsafeBufferPointer {
                        HostCopy.copyReturningLargest($0.baseAddress ?? UnsafePointer(out), to: out, count: count)
                    }
                }
                #expect(copied == source, "count \(count), shift \(shift)")
                #expect(largest == expected, "count \(count), shift \(shift)")
            }
        }
    }

    @Test func int64CopiesAndFindsTheLargestAsUnsigned() {
        var random = Generator(state: 12)
        for count in Self.lengths {
            for shift in [0, 8, 24, 4] {
                var source = (0..<count).map { _ in Int64(random.next() % 40_000_000_000) }
                if count > 0 {
                    let at = [0, count / 2, count - 1][Int(random.next() % 3)]
                    source[at] = random.next() % 4 == 0 ? -Int64(random.next() % 1000) - 1 : 50_000_000_000
                }
                let expected = source.map { UInt64(bitPattern: $0) }.max() ?? 0
                var largest: UInt64 = 0
                let copied = Self.withDestination(Int64.self, count: count, shift: shift) { out in
                    largest = source.withUnsafeBufferPointer {
                        HostCopy.copyReturningLargest($0.baseAddress ?? UnsafePointer(out), to: out, count: count)
                    }
                }
                #expect(copied == source, "count \(count), shift \(shift)")
                #expect(largest == expected, "count \(count), shift \(shift)")
            }
        }
    }

    /// 24-bit split indices: low 16 bits and high 8 bits land in their arrays (aligned, streamed, or not), the
    /// largest is of the source values (so an index past 24 bits or a negative one is seen, not truncated away).
    @Test func int32SplitsInto16And8BitsAndFindsTheLargest() {
        var random = Generator(state: 14)
        for count in Self.lengths {
            for (lowShift, highShift) in [(0, 0), (2, 1), (32, 16), (6, 3)] {
                var source = (0..<count).map { _ in Int32(random.next() % (1 << 24)) }
                if count > 0 {
                    let at = [0, count / 2, count - 1][Int(random.next() % 3)]
                    source[at] = random.next() % 2 == 0 ? -Int32(random.next() % 1000) - 1 : 1 << 24 | 5
                }
                let expected = source.map { UInt32(bitPattern: $0) }.max() ?? 0
                var largest: UInt32 = 0
                var high: [UInt8] = []
                let low = Self.withDestination(UInt16.self, count: count, shift: lowShift) { lowOut in
                    high = Self.withDestination(UInt8.self, count: count, shift: highShift) { highOut in
                        largest = source.withUnsafeBufferPointer {
                            HostCopy.splitReturningLargest($0.baseAddress ?? UnsafePointer(bitPattern: 8)!, low: lowOut,
                                                           high: highOut, count: count)
                        }
                    }
                }
                let bits = source.map { UInt32(bitPattern: $0) }
                #expect(low == bits.map { UInt16(truncatingIfNeeded: $0) }, "count \(count), shifts \(lowShift)/\(highShift)")
                #expect(high == bits.map { UInt8(truncatingIfNeeded: $0 >> 16) }, "count \(count)")
                #expect(largest == expected, "count \(count)")
            }
        }
    }

    @Test func floatCopiesAndFindsInfinityOrNaNAnywhere() {
        var random = Generator(state: 13)
        for count in Self.lengths {
            for shift in [0, 4, 28, 2] {
                let source = (0..<count).map { _ in Float(Int(random.next() % 2_000_001) - 1_000_000) * 1e-3 }
                for bad in [nil, Float.infinity, -Float.infinity, Float.nan, Float(bitPattern: 0x7F80_0001)] {
                    for at in bad == nil || count == 0 ? [0] : Array(Set([0, count / 2, count - 1])) {
                        var values = source
                        if let bad, count > 0 { values[at] = bad }
                        var finite = false
                        let copied = Self.withDestination(UInt32.self, count: count, shift: shift) { out in
                            let floats = UnsafeMutableRawPointer(out).assumingMemoryBound(to: Float.self)
                            finite = values.withUnsafeBufferPointer {
                                HostCopy.copyCheckingFinite($0.baseAddress ?? UnsafePointer(floats), to: floats,
                                                            count: count)
                            }
                        }
                        #expect(copied == values.map(\.bitPattern), "count \(count), shift \(shift)")
                        #expect(finite == (bad == nil || count == 0), "count \(count), shift \(shift), at \(at)")
                    }
                }
            }
        }
    }
}
