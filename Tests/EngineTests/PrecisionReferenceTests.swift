import BagelTestSupport
import Core
import DLRM
import Foundation
import Testing

@testable import Lab

/// `bagel bench`'s fp32 reference: rows redrawn as the fp32 numbers a seeded model was drawn from, the
/// compact model equal to the full one on the rows it keeps, and the error it reports.
@Suite struct PrecisionReferenceTests {
    @Test func redrawnRowsAreTheFP32TablesRows() throws {
        for preset in [ModelPreset.kaggle, .mlperfV2] {  // dims 16 and 128; rows straddle no chunk / many chunks
            let config = preset.config(maxRows: 3000)
            let model = try Model.random(config: config, seed: 7)
            for t in [0, config.tables.count - 1] {
                let rows = [0, 5, config.tables[t].rows - 1, 2, 5]
                let drawn = WeightInitializer.fp32Rows(config: config, seed: 7, table: t, rows: rows)
                let stored = rows.flatMap { r in (0..<config.tables[t].dim).map { model.tables[t].value(row: r, column: $0) } }
                #expect(drawn == stored, "\(preset) table \(t)")
            }
        }
        // A dim that does not divide the 65,536-element chunks: rows straddle two chunks.
        var odd = ModelPreset.kaggle.config(maxRows: 20_000)
        odd.interaction = .cat
        odd.tables = odd.tables.map { var table = $0; table.dim = 13; return table }
        let model = try Model.random(config: odd, seed: 3)
        let t = odd.tables.firstIndex { $0.rows * 13 > 70_000 }!
        let rows = [5041, 5042, 0, odd.tables[t].rows - 1]  // row 5041 holds elements 65,533–65,545
        #expect(WeightInitializer.fp32Rows(config: odd, seed: 3, table: t, rows: rows)
                == rows.flatMap { r in (0..<13).map { model.tables[t].value(row: r, column: $0) } })
    }

    @Test func theReportMeasuresTablePrecision() throws {
        let batchConfig = ModelPreset.terabyte.config(maxRows: 2000)
        let batch = RandomModels.batch(config: batchConfig, size: 50, seed: 4, weights: false)
        // fp32 tables on the CPU: the reference is the same arithmetic on the same numbers.
        let exact = try PrecisionReference.compare(engine: CPUEngine(model: Model.random(config: batchConfig, seed: 9)),
                                                   batch: batch, seed: 9, samples: 40)
        #expect(exact.samples == 40 && exact.maxAbsoluteDifference == 0 && exact.rows.contains("fp32 rows"))
        // int4 tables drawn from the same seed: the quantisation shows, and stays small.
        let int4 = try PrecisionReference.compare(
            engine: CPUEngine(model: Model.random(config: ModelPreset.terabyte.config(maxRows: 2000, dtype: .int4), seed: 9)),
            batch: batch, seed: 9, samples: 40)
        #expect(int4.maxAbsoluteDifference > 1e-6 && int4.maxAbsoluteDifference < 0.05 && int4.rows.contains("drawn"))
        // Without the seed the stored rows are widened: the same engine on the same numbers again.
        let widened = try PrecisionReference.compare(
            engine: CPUEngine(model: Model.random(config: ModelPreset.terabyte.config(maxRows: 2000, dtype: .int4), seed: 9)),
            batch: batch, seed: nil, samples: 40)
        #expect(widened.maxAbsoluteDifference == 0 && widened.rows.contains("does not count"))
    }
}
