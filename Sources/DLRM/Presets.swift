import Core
/// The model shapes of docs/METHOD.md §2, by name.
public enum ModelPreset: String, CaseIterable, Sendable {
    /// The MICRO'24 artifact: 12 × 500K × 128, 150 lookups, bottom 256-128-128, top 128-64-1.
    case paper
    /// facebookresearch/dlrm on Criteo Kaggle: 26 tables, dim 16, one-hot.
    case kaggle
    /// facebookresearch/dlrm on Criteo Terabyte: 26 tables, dim 64, one-hot.
    case terabyte
    /// MLPerf DLRM v1: 26 tables, dim 128.
    case mlperfV1 = "mlperf-v1"
    /// MLPerf Inference DLRM-v2 (TorchRec `DLRM_DCN`): 26 tables of 204M rows in all, dim 128, multi-hot,
    /// a 3-layer rank-512 cross network; TorchRec tensor names.
    case mlperfV2 = "mlperf-v2"

    /// Criteo Kaggle cardinalities after the usual preprocessing (docs/METHOD.md §2).
    public static let kaggleRows = [
        1460, 583, 10_131_227, 2_202_608, 305, 24, 12517, 633, 3, 93145, 5683, 8_351_593, 3194, 27, 14992,
        5_461_306, 10, 5652, 2173, 4, 7_046_547, 18, 15, 286_181, 105, 142_572,
    ]

    /// Criteo Terabyte cardinalities as facebookresearch/dlrm uses them with --max-ind-range=10000000.
    public static let terabyteRows = [
        9_980_333, 36084, 17217, 7378, 20134, 3, 7112, 1442, 61, 9_758_201, 1_333_352, 313_829, 10, 2208, 11156,
        122, 4, 970, 14, 9_994_222, 7_267_859, 9_946_608, 415_421, 12420, 101, 36,
    ]

    /// Criteo Terabyte cardinalities of the MLPerf DLRM v1 reference (--max-ind-range=40000000).
    public static let mlperfRows = [
        39_884_406, 39043, 17289, 7420, 20263, 3, 7120, 1543, 63, 38_532_951, 2_953_546, 403_346, 10, 2208, 11938,
        155, 4, 976, 14, 39_979_771, 25_641_295, 39_664_984, 585_935, 12972, 108, 36,
    ]

    /// MLPerf DLRM-v2's cardinalities (the 40M-row tables are capped as in its reference).
    public static let mlperfV2Rows = [
        40_000_000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40_000_000, 3_067_956, 405_282, 10, 2209, 11938, 155,
        4, 976, 14, 40_000_000, 40_000_000, 40_000_000, 590_152, 12973, 108, 36,
    ]

    /// MLPerf DLRM-v2's lookups per table (214 per sample).
    public static let mlperfV2MultiHot = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1]

    /// Row cap applied when the user names none: the full terabyte and MLPerf v1 tables are tens of
    /// gigabytes of random numbers, which nobody wants by accident. `--max-rows 0` lifts the cap.
    /// mlperf-v2 is full size by default (104.5 GB in fp32): it is the benchmark's model, and its
    /// full-size runs are the point; `--max-rows` caps it.
    public var defaultMaxRows: Int? {
        switch self {
        case .paper, .kaggle, .mlperfV2: return nil
        case .terabyte, .mlperfV1: return 1_000_000
        }
    }

    /// The preset's architecture, each table's rows capped at `maxRows` when given.
    public func config(maxRows: Int? = nil, dtype: StorageType = .fp32, lookups: Int? = nil) -> ModelConfig {
        func tables(_ rows: [Int], dim: Int) -> [TableConfig] {
            rows.map { TableConfig(rows: min($0, maxRows ?? Int.max), dim: dim, pooling: .sum, dtype: dtype) }
        }
        switch self {
        case .paper:
            return ModelConfig(
                name: rawValue, denseFeatures: 256, bottomMLP: [128, 128],
                tables: tables(Array(repeating: 500_000, count: 12), dim: 128),
                interaction: .dot, topMLP: [128, 64, 1], lookupsPerTable: lookups ?? 150)
        case .kaggle:
            return ModelConfig(
                name: rawValue, denseFeatures: 13, bottomMLP: [512, 256, 64, 16],
                tables: tables(Self.kaggleRows, dim: 16),
                interaction: .dot, topMLP: [512, 256, 1], lookupsPerTable: lookups ?? 1)
        case .terabyte:
            return ModelConfig(
                name: rawValue, denseFeatures: 13, bottomMLP: [512, 256, 64],
                tables: tables(Self.terabyteRows, dim: 64),
                interaction: .dot, topMLP: [512, 512, 256, 1], lookupsPerTable: lookups ?? 1)
        case .mlperfV1:
            return ModelConfig(
                name: rawValue, denseFeatures: 13, bottomMLP: [512, 256, 128],
                tables: tables(Self.mlperfRows, dim: 128),
                interaction: .dot, topMLP: [1024, 1024, 512, 256, 1], lookupsPerTable: lookups ?? 1)
        case .mlperfV2:
            var list = tables(Self.mlperfV2Rows, dim: 128)
            for t in list.indices { list[t].multiHot = lookups ?? Self.mlperfV2MultiHot[t] }
            return ModelConfig(
                name: rawValue, denseFeatures: 13, bottomMLP: [512, 256, 128], tables: list, interaction: .dcn,
                topMLP: [1024, 1024, 512, 256, 1], lookupsPerTable: lookups ?? 8,
                crossNetwork: CrossNetworkConfig(layers: 3, lowRank: 512), weightNames: .torchrec)
        }
    }
}
