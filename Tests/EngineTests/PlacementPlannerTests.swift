import BagelTestSupport
import Core
import DLRM
import Engine
import Foundation
import Inputs
import Testing

/// The placement planner without a GPU: budgets, which rows go where, predicted against measured hits.
@Suite struct PlacementPlannerTests {
    /// Three tables: a hot one read 4 times a sample, a lukewarm one, and one never read hot.
    func config(rows: Int = 10_000) -> ModelConfig {
        ModelConfig(name: "tiers", denseFeatures: 4, bottomMLP: [8],
                    tables: [TableConfig(rows: rows, dim: 16, multiHot: 4), TableConfig(rows: rows, dim: 16, multiHot: 1),
                             TableConfig(rows: rows, dim: 32, multiHot: 1)],
                    topMLP: [8, 1])
    }

    /// Accesses drawn from a Zipf law over scattered rows (seeded).
    func trace(rows: Int, exponent: Double, count: Int, seed: UInt64) -> [Int] {
        var stream = IndexStream(pattern: .zipf(exponent: exponent), rows: rows, seed: seed)
        return (0..<count).map { _ in stream.next() }
    }

    @Test func aBudgetThatHoldsEverythingSplitsNothing() throws {
        let c = config()
        let all = c.tables.reduce(0) { $0 + $1.byteCount }
        let plan = try PlacementPlanner.plan(config: c, hbmBudget: all, estimates: [.uniform, .uniform, .uniform])
        #expect(!plan.hasHostTier && plan.hostBytes == 0 && plan.predictedHitRate == 1)
        #expect(plan.tables == PlacementPlan.allInHBM(c).tables)
    }

    @Test func rowsGoWhereLookupsPerByteAreHighest() throws {
        let c = config()
        let traces = [trace(rows: 10_000, exponent: 1.1, count: 200_000, seed: 1),
                      trace(rows: 10_000, exponent: 0.6, count: 50_000, seed: 2)]
        let estimates: [AccessEstimate] = [
            .measured(MeasuredAccess(AccessProfile(accesses: traces[0], rows: 10_000))),
            .measured(MeasuredAccess(AccessProfile(accesses: traces[1], rows: 10_000))),
            .uniform,
        ]
        let budget = 10_000 * 64  // a third of the 64-byte rows' worth
        let plan = try PlacementPlanner.plan(config: c, hbmBudget: budget, estimates: estimates)
        #expect(plan.deviceBytes <= budget)
        // No other split of the same bytes does better: against an even split of each table's share,
        // and against moving a slice of rows from any table to any other.
        func expectedHits(_ rows: [Int]) -> Double {
            (0..<3).reduce(0.0) { $0 + Double(c.tables[$1].multiHot!) * estimates[$1].coverage(top: rows[$1], rows: 10_000) }
        }
        let rows = plan.tables.map(\.deviceRows)
        let planned = expectedHits(rows)
        #expect(planned >= expectedHits([budget / 3 / 64, budget / 3 / 64, budget / 3 / 128]))
        for from in 0..<3 {
            for to in 0..<3 where from != to && rows[from] >= 500 {
                var moved = rows
                moved[from] -= 500
                moved[to] += 500 * c.tables[from].dim / c.tables[to].dim
                #expect(planned >= expectedHits(moved) - 1e-9, "moving rows from \(from) to \(to) does better than \(rows)")
            }
        }
        // The uniform table (twice the bytes a row, no skew) gets nothing while hot rows remain elsewhere.
        #expect(rows[2] == 0, "\(rows)")
        // Its hottest rows are the profile's hottest.
        let hottest = try #require(plan.tables[0].hotRanking)
        #expect(hottest.prefix(10) == AccessProfile(accesses: traces[0], rows: 10_000).ranking.prefix(10))
        // A plan read from a trace predicts that trace's hits exactly (the trace is the traffic).
        for t in 0..<2 {
            let measured = plan.measuredHitRate(table: t, trace: traces[t])
            #expect(abs(measured - plan.tables[t].predictedHitRate) < 1e-9, "table \(t)")
        }
        #expect(plan.describe(modelName: "tiers").contains("hottest rows by profile"))
    }

    /// Good–Turing: planned on a sample, checked on fresh accesses of the same traffic.
    @Test func goodTuringPredictsFreshAccessesWithinTwoPoints() throws {
        let c = config(rows: 100_000)
        for (exponent, budgetRows) in [(0.9, 5_000), (1.05, 20_000), (0.7, 30_000)] {
            // One stationary stream: the first half plans, the second checks.
            let accesses = trace(rows: 100_000, exponent: exponent, count: 200_000, seed: 7)
            let sample = Array(accesses[..<100_000])
            let fresh = Array(accesses[100_000...])
            let estimate = AccessEstimate.measured(
                MeasuredAccess(AccessProfile(accesses: sample, rows: 100_000), reading: .goodTuring))
            let plan = try PlacementPlanner.plan(config: c, hbmBudget: budgetRows * 64 * 5,
                                                 estimates: [estimate, .uniform, .uniform])
            let predicted = plan.tables[0].predictedHitRate
            let measured = plan.measuredHitRate(table: 0, trace: fresh)
            let naive = MeasuredAccess(AccessProfile(accesses: sample, rows: 100_000)).ranking.count
            #expect(abs(predicted - measured) < 0.02,
                    "zipf \(exponent), \(plan.tables[0].deviceRows) rows: predicted \(predicted), measured \(measured) (\(naive) seen)")
        }
    }

    @Test func splitTablesPayForTheirRemap() throws {
        let c = config()
        let t0 = trace(rows: 10_000, exponent: 1.0, count: 20_000, seed: 3)
        let plan = try PlacementPlanner.plan(
            config: c, hbmBudget: 200_000,
            estimates: [.measured(MeasuredAccess(AccessProfile(accesses: t0, rows: 10_000))), .uniform, .uniform])
        let hot = plan.tables[0]
        #expect(hot.isSplit && hot.deviceBytes == hot.deviceRows * 64 + 10_000 * 4)
        #expect(plan.tables[1].hotRanking == nil)  // no profile: the first rows by id
        #expect(plan.deviceBytes <= 200_000)
    }
}
