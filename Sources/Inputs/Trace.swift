import Core
import DLRM

/// An embedding-access trace: one row index per line, decimal (the format of ../shared/data,
/// cut from Meta's dlrm_datasets). Blank lines and lines starting with '#' are skipped.
public struct AccessTrace: Sendable, Equatable {
    public let rows: [Int]
    public let source: String

    public init(rows: [Int], source: String = "memory") {
        self.rows = rows
        self.source = source
    }

    public static func read(path: String) throws -> AccessTrace {
        let reader = try LineReader(path: path)
        var rows: [Int] = []
        while let _ = try reader.nextLine({ line -> Void in
            if line.isEmpty || line[0] == UInt8(ascii: "#") { return }
            guard let value = ASCII.parseInt(line) else {
                throw BagelError(
                    .invalidData, "\(path):\(reader.lineNumber): expected one row index per line, found \(ASCII.show(line))")
            }
            guard value >= 0 else {
                throw BagelError(.invalidData, "\(path):\(reader.lineNumber): row index \(value) is negative")
            }
            rows.append(value)
        }) {}
        guard !rows.isEmpty else { throw BagelError(.invalidData, "\(path): the trace holds no row indices") }
        return AccessTrace(rows: rows, source: path)
    }

    /// Largest row index + 1.
    public var rowSpan: Int { (rows.max() ?? -1) + 1 }
}
