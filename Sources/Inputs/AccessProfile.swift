import DLRM

/// How often each row of a table is read, from a trace or a data file: the input of L2 pinning.
public struct AccessProfile: Sendable {
    /// Rows of the table.
    public let rows: Int
    public let accesses: Int
    /// Accesses per row.
    public let counts: [UInt32]
    /// Rows accessed at least once.
    public let uniqueRows: Int
    /// Rows by decreasing count (ties: lower row first); only rows accessed at least once.
    public let ranking: [Int]
    /// Reuse distance (accesses since the previous access to the same row), log2 buckets:
    /// bucket b counts reuses with distance in [2^b, 2^(b+1)); `firstTouches` counts cold accesses.
    public let reuseDistance: [Int]
    public let firstTouches: Int

    public init(accesses sequence: [Int], rows: Int) {
        self.rows = rows
        var counts = [UInt32](repeating: 0, count: rows)
        var lastSeen = [Int32](repeating: -1, count: rows)
        var reuse = [Int](repeating: 0, count: 64)
        var cold = 0
        for (position, row) in sequence.enumerated() {
            counts[row] &+= 1
            let last = Int(lastSeen[row])
            if last < 0 {
                cold += 1
            } else {
                let distance = position - last
                reuse[Int.bitWidth - distance.leadingZeroBitCount - 1] += 1
            }
            lastSeen[row] = Int32(truncatingIfNeeded: position)
        }
        while reuse.count > 1 && reuse.last == 0 { reuse.removeLast() }
        self.counts = counts
        self.accesses = sequence.count
        self.reuseDistance = reuse
        self.firstTouches = cold
        let touched = (0..<rows).filter { counts[$0] > 0 }
        self.uniqueRows = touched.count
        self.ranking = touched.sorted { counts[$0] != counts[$1] ? counts[$0] > counts[$1] : $0 < $1 }
    }

    /// The `k` most accessed rows, hottest first.
    public func hottest(_ k: Int) -> [Int] { Array(ranking.prefix(k)) }

    /// Share of accesses that the `k` hottest rows take.
    public func coverage(top k: Int) -> Double {
        guard accesses > 0 else { return 0 }
        let covered = ranking.prefix(k).reduce(0) { $0 + Int(counts[$1]) }
        return Double(covered) / Double(accesses)
    }

    /// Rows grouped by access count in log2 buckets: (count range, rows, share of accesses).
    public func accessCountHistogram() -> [(range: ClosedRange<Int>, rows: Int, share: Double)] {
        var rowsPerBucket = [Int](repeating: 0, count: 33)
        var accessesPerBucket = [Int](repeating: 0, count: 33)
        for count in counts where count > 0 {
            let bucket = 31 - Int(count.leadingZeroBitCount)
            rowsPerBucket[bucket] += 1
            accessesPerBucket[bucket] += Int(count)
        }
        var result: [(range: ClosedRange<Int>, rows: Int, share: Double)] = []
        let total = Double(max(accesses, 1))
        for b in 0..<33 where rowsPerBucket[b] > 0 {
            let low = 1 << b
            let high = (1 << (b + 1)) - 1
            result.append((low...high, rowsPerBucket[b], Double(accessesPerBucket[b]) / total))
        }
        return result
    }
}
