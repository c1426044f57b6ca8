import Core
import DLRM
import Foundation
import HeapModule
import Inputs

/// Measured access counts of one table, turned into what the planner needs: the rows hottest first
/// and the share of lookups each is expected to take.
///
/// Two readings of a trace. `.sample`: the trace is the traffic (a benchmark replays it), so its own
/// counts are the shares. `.goodTuring`: the trace is a sample of stationary traffic; its counts
/// overrate the rows it saw (a row seen once looks as hot as it will ever be; rows it missed look
/// cold), and Good–Turing corrects that: a row seen k times in N accesses is expected at
/// (k+1)·n(k+1) / (n(k)·N), where n(k) rows were seen k times, and the rows never seen share n(1)/N.
/// Counts above `reliableCount` are trusted as they are. Neither reading foresees drift: traffic
/// whose hot rows move over time (the traces in ../shared/data do) needs online updates.
public struct MeasuredAccess: Sendable {
    public enum Reading: String, Sendable, CaseIterable {
        case sample
        case goodTuring = "good-turing"
    }

    public let ranking: [Int]
    public let rows: Int
    /// cumulative[k] = expected share of lookups on the k hottest rows.
    let cumulative: [Double]
    /// Expected share of one row never seen in the sample.
    let unseenShare: Double
    static let reliableCount = 5

    public init(_ profile: AccessProfile, reading: Reading = .sample) {
        ranking = profile.ranking
        rows = profile.rows
        let n = Double(max(profile.accesses, 1))
        var rowsSeen = [Int: Int]()  // count → rows with that count
        for row in ranking { rowsSeen[Int(profile.counts[row]), default: 0] += 1 }
        func expected(_ k: Int) -> Double {
            guard reading == .goodTuring, k <= Self.reliableCount, let here = rowsSeen[k], let above = rowsSeen[k + 1] else { return Double(k) / n }
            return Double(k + 1) * Double(above) / (Double(here) * n)
        }
        let unseenRows = profile.rows - ranking.count
        let unseenMass = unseenRows > 0 && reading == .goodTuring ? Double(rowsSeen[1] ?? 0) / n : 0
        var shares = ranking.map { expected(Int(profile.counts[$0])) }
        // Good–Turing's raw estimates need not stay in count order or sum to 1: keep both.
        for i in shares.indices.dropFirst() where shares[i] > shares[i - 1] { shares[i] = shares[i - 1] }
        let total = shares.reduce(0, +) + unseenMass
        var cumulative = [0.0]
        cumulative.reserveCapacity(shares.count + 1)
        var running = 0.0
        for share in shares {
            running += share / max(total, 1e-300)
            cumulative.append(running)
        }
        self.cumulative = cumulative
        unseenShare = unseenRows > 0 ? unseenMass / max(total, 1e-300) / Double(unseenRows) : 0
    }

    func coverage(top n: Int) -> Double {
        let seen = min(n, ranking.count)
        return min(1, cumulative[seen] + Double(max(0, min(n, rows) - ranking.count)) * unseenShare)
    }
}

/// What the planner knows about how often a table's rows are read.
public enum AccessEstimate: Sendable {
    /// Counts from a trace or `bagel profile` (the rows it places in HBM are the ones counted hottest).
    case measured(MeasuredAccess)
    /// Nothing known: every row as likely as any other (HBM holds the first rows by id).
    case uniform
    /// A what-if for sizing: a Zipf law of this exponent over the rows. It predicts hit rates for a
    /// skew like that, but without a profile the engine cannot tell which rows are the hot ones.
    case zipf(exponent: Double)

    /// Share of this table's lookups that fall on its `n` hottest rows (of `rows`).
    public func coverage(top n: Int, rows: Int) -> Double {
        guard rows > 0, n > 0 else { return 0 }
        if n >= rows { return 1 }
        switch self {
        case .uniform: return Double(n) / Double(rows)
        case .zipf(let s): return ZipfSampler.coverage(top: n, n: rows, exponent: s)
        case .measured(let access): return access.coverage(top: n)
        }
    }
}

/// Where one table's rows live.
public struct TablePlacement: Sendable, Equatable {
    public let table: Int
    public let rows: Int
    public let rowBytes: Int
    /// Rows kept in HBM: the hottest ones (stored first), the rest in the host tier.
    public let deviceRows: Int
    /// Row ids hottest first when a profile chose them (the table is stored in this order); nil:
    /// rows keep their order and the first `deviceRows` ids are in HBM.
    public let hotRanking: [Int]?
    /// Lookups of this table per sample.
    public let lookupsPerSample: Int
    /// Share of this table's lookups the planner expects HBM to serve.
    public let predictedHitRate: Double

    public var hostRows: Int { rows - deviceRows }
    public var isSplit: Bool { deviceRows < rows }
    /// HBM bytes: the rows kept there, and the row remap (4 bytes a row) of a permuted table.
    public var deviceBytes: Int { deviceRows * rowBytes + (isSplit && hotRanking != nil ? rows * 4 : 0) }
    public var hostBytes: Int { hostRows * rowBytes }
}

/// A placement of every table of a model: rows in HBM within a budget, the rest in the host tier.
public struct PlacementPlan: Sendable, Equatable {
    public let tables: [TablePlacement]
    public let hbmBudget: Int

    public var deviceBytes: Int { tables.reduce(0) { $0 + $1.deviceBytes } }
    public var hostBytes: Int { tables.reduce(0) { $0 + $1.hostBytes } }
    public var hasHostTier: Bool { tables.contains { $0.isSplit } }

    /// Share of all lookups (weighted by lookups per sample) that the plan expects HBM to serve.
    public var predictedHitRate: Double {
        let lookups = tables.reduce(0) { $0 + $1.lookupsPerSample }
        guard lookups > 0 else { return 1 }
        return tables.reduce(0.0) { $0 + Double($1.lookupsPerSample) * $1.predictedHitRate } / Double(lookups)
    }

    /// Every row in HBM.
    public static func allInHBM(_ config: ModelConfig) -> PlacementPlan {
        PlacementPlan(tables: config.tables.enumerated().map { t, table in
            TablePlacement(table: t, rows: table.rows, rowBytes: table.byteCount / max(table.rows, 1), deviceRows: table.rows,
                           hotRanking: nil, lookupsPerSample: config.lookups(table: t), predictedHitRate: 1)
        }, hbmBudget: config.tables.reduce(0) { $0 + $1.byteCount })
    }

    /// The share of `trace`'s lookups of table `t` that this plan serves from HBM (what the
    /// planner's prediction is checked against).
    public func measuredHitRate(table t: Int, trace: [Int]) -> Double {
        let placement = tables[t]
        guard placement.isSplit, !trace.isEmpty else { return 1 }
        // The same rows the engine stores first (TableLayout.hotFirst: the ranking, then the other rows by id).
        var inDevice = [Bool](repeating: false, count: placement.rows)
        if let ranking = placement.hotRanking, let order = TableLayout.hotFirst(hot: ranking, rows: placement.rows).order {
            for row in order.prefix(placement.deviceRows) { inDevice[Int(row)] = true }
        } else {
            for row in 0..<placement.deviceRows { inDevice[row] = true }
        }
        let hits = trace.reduce(0) { $0 + ($1 >= 0 && $1 < placement.rows && inDevice[$1] ? 1 : 0) }
        return Double(hits) / Double(trace.count)
    }

    public func describe(modelName: String) -> String {
        var lines = ["placement of \(modelName): HBM budget \(formatBytes(hbmBudget)) for embedding rows; the rest in pinned host memory read over the link"]
        lines.append("table        rows      row B     HBM rows  (share)   HBM bytes  host bytes  lookups  predicted HBM hits")
        for p in tables {
            let share = p.rows > 0 ? Double(p.deviceRows) / Double(p.rows) : 1
            lines.append(
                pad("\(p.table)", 5) + pad(p.rows, 13) + pad(p.rowBytes, 9) + pad(p.deviceRows, 13)
                    + pad(String(format: "(%.1f%%)", share * 100), 10) + pad(formatBytes(p.deviceBytes), 12)
                    + pad(formatBytes(p.hostBytes), 12) + pad(p.lookupsPerSample, 9)
                    + pad(String(format: "%.1f%%", p.predictedHitRate * 100), 20)
                    + (p.isSplit ? (p.hotRanking != nil ? "  hottest rows by profile" : "  first rows by id") : ""))
        }
        lines.append(
            "total: HBM \(formatBytes(deviceBytes)) of \(formatBytes(hbmBudget)), host \(formatBytes(hostBytes)); "
                + String(format: "expected HBM hit rate %.1f%% of all lookups", predictedHitRate * 100))
        return lines.joined(separator: "\n")
    }

    private func pad(_ value: CustomStringConvertible, _ width: Int) -> String {
        let text = "\(value)"
        return text.count >= width ? text + " " : String(repeating: " ", count: width - text.count) + text
    }
}

/// Chooses how many of each table's rows stay in HBM: rows go in order of expected lookups per byte
/// across all tables (the hottest rows of the most-read tables first) until the budget is spent. The
/// hit-rate curves are concave (rows are taken hottest first), so taking the best next piece of any
/// table is optimal for this fractional knapsack.
public enum PlacementPlanner {
    /// Pieces a table's curve is cut into (enough to place within 0.05% of a table).
    static let piecesPerTable = 2048

    public static func plan(config: ModelConfig, hbmBudget: Int, estimates: [AccessEstimate]) throws -> PlacementPlan {
        precondition(estimates.count == config.tables.count)
        struct Piece: Comparable {
            let value: Double
            let table: Int
            static func < (a: Piece, b: Piece) -> Bool { a.value < b.value }
        }
        let tables = config.tables
        let rowBytes = tables.map { $0.byteCount / max($0.rows, 1) }
        let lookups = tables.indices.map { config.lookups(table: $0) }
        let pieceRows = tables.map { max(1, ($0.rows + piecesPerTable - 1) / piecesPerTable) }
        var deviceRows = [Int](repeating: 0, count: tables.count)
        var spent = 0
        // A split permuted table also needs its row remap in HBM: charged when its first piece is taken.
        func remapBytes(_ t: Int) -> Int {
            if case .measured = estimates[t] { return tables[t].rows * 4 }
            return 0
        }
        func nextPiece(_ t: Int) -> Piece? {
            let n = deviceRows[t]
            guard n < tables[t].rows else { return nil }
            let end = min(tables[t].rows, n + pieceRows[t])
            let gain = estimates[t].coverage(top: end, rows: tables[t].rows) - estimates[t].coverage(top: n, rows: tables[t].rows)
            return Piece(value: Double(lookups[t]) * gain / Double((end - n) * rowBytes[t]), table: t)
        }
        var heap = Heap<Piece>(tables.indices.compactMap(nextPiece))
        while let piece = heap.popMax() {
            let t = piece.table
            let end = min(tables[t].rows, deviceRows[t] + pieceRows[t])
            var cost = (end - deviceRows[t]) * rowBytes[t]
            if deviceRows[t] == 0 { cost += remapBytes(t) }
            if spent + cost > hbmBudget {
                // Take what still fits of this piece (whole rows) and leave the table there; pieces of
                // other tables are worth less but may still fit what is left.
                let room = hbmBudget - spent - (deviceRows[t] == 0 ? remapBytes(t) : 0)
                if room >= rowBytes[t] {
                    let extra = min(end - deviceRows[t], room / rowBytes[t])
                    spent += extra * rowBytes[t] + (deviceRows[t] == 0 ? remapBytes(t) : 0)
                    deviceRows[t] += extra
                }
                continue
            }
            spent += cost
            deviceRows[t] = end
            if let next = nextPiece(t) { heap.insert(next) }
        }
        let placements = tables.indices.map { t -> TablePlacement in
            let split = deviceRows[t] < tables[t].rows
            var ranking: [Int]?
            // A table with nothing in HBM keeps its order (no remap, read in place where it can be).
            if split, deviceRows[t] > 0, case .measured(let access) = estimates[t] {
                ranking = Array(access.ranking.prefix(deviceRows[t]))
            }
            return TablePlacement(
                table: t, rows: tables[t].rows, rowBytes: rowBytes[t], deviceRows: deviceRows[t], hotRanking: ranking,
                lookupsPerSample: lookups[t], predictedHitRate: estimates[t].coverage(top: deviceRows[t], rows: tables[t].rows))
        }
        return PlacementPlan(tables: placements, hbmBudget: hbmBudget)
    }
}

extension ModelConfig {
    /// Lookups of table `t` per sample (its multi-hot size, else the model's lookups per table).
    func lookups(table t: Int) -> Int { tables[t].multiHot ?? lookupsPerTable }
}
