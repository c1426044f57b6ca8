import Core
import Foundation

/// The hot rows of one table, hottest first, as written by `bagel profile` and read by the GPU
/// engine for L2 pinning.
///
/// File format (text): a first line `# bagel hot rows v1`, further `#` comment lines
/// (`# rows=… accesses=… unique=…`), then one row index per line.
public struct HotRowList: Sendable, Equatable {
    public static let header = "# bagel hot rows v1"

    public var rows: [Int]
    /// Rows of the table the list was made for.
    public var tableRows: Int
    public var comment: String

    public init(rows: [Int], tableRows: Int, comment: String = "") {
        self.rows = rows
        self.tableRows = tableRows
        self.comment = comment
    }

    public func write(to path: String) throws {
        var text = Self.header + "\n# table_rows=\(tableRows)\n"
        if !comment.isEmpty {
            for line in comment.split(separator: "\n") { text += "# \(line)\n" }
        }
        for row in rows { text += "\(row)\n" }
        do {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw BagelError(.io, "\(path): cannot write the hot-row list (\(error.localizedDescription))")
        }
    }

    /// Reads a list and checks it against a table of `tableRows` rows (every row in range, no repeats).
    public static func read(path: String, tableRows: Int) throws -> HotRowList {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw BagelError(.io, "\(path): cannot read the hot-row list (\(error.localizedDescription))")
        }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.first.map({ $0.hasPrefix(header) }) == true else {
            throw BagelError(.invalidData, "\(path):1: not a hot-row list (expected \"\(header)\")")
        }
        lines.removeFirst()
        var rows: [Int] = []
        var seen = Set<Int>()
        var comments: [String] = []
        for (i, line) in lines.enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            if trimmed.hasPrefix("#") {
                comments.append(String(trimmed.dropFirst().trimmingCharacters(in: .whitespaces)))
                continue
            }
            guard let row = Int(trimmed) else {
                throw BagelError(.invalidData, "\(path):\(i + 2): expected a row index, found \"\(trimmed.prefix(40))\"")
            }
            guard row >= 0 && row < tableRows else {
                throw BagelError(.invalidData, "\(path):\(i + 2): row \(row) is outside the table's rows 0..<\(tableRows)")
            }
            guard seen.insert(row).inserted else {
                throw BagelError(.invalidData, "\(path):\(i + 2): row \(row) is listed twice")
            }
            rows.append(row)
        }
        return HotRowList(
            rows: rows, tableRows: tableRows,
            comment: comments.filter { !$0.hasPrefix("table_rows=") }.joined(separator: "\n"))
    }
}
