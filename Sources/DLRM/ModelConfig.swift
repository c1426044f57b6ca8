import Core
import Foundation

/// How the rows selected by one bag are combined.
public enum PoolingMode: String, Codable, Sendable, CaseIterable {
    /// Σ wᵢ·E[i] (wᵢ = 1 without per-sample weights).
    case sum
    /// Σ E[i] / bag length; an empty bag gives zeros.
    case mean
}


/// How the bottom-MLP output and the pooled embeddings are combined before the top MLP.
public enum InteractionOp: String, Codable, Sendable, CaseIterable {
    /// DLRM's pairwise dot products of T = [x, e₁ … eₙ], after x (pair order: `DotPairOrder`).
    case dot
    /// Plain concatenation [x, e₁ … eₙ].
    case cat
    /// DCNv2's low-rank cross network over x₀ = [x, e₁ … eₙ] (TorchRec `DLRM_DCN`, MLPerf DLRM-v2):
    /// x_{l+1} = x₀ ⊙ (W_l (V_l x_l) + b_l) + x_l, shapes in `CrossNetworkConfig`.
    case dcn
}

/// The order of the dot interaction's pairs ⟨Tᵢ, Tⱼ⟩ in the top MLP's input. Part of the model: the
/// same weights with the other order give plausible but wrong probabilities.
public enum DotPairOrder: String, Codable, Sendable, CaseIterable {
    /// facebookresearch/dlrm: the strict lower triangle, row-major: (1,0), (2,0), (2,1), (3,0), …
    case lower
    /// TorchRec `DLRM`: the strict upper triangle, row-major (`triu_indices(offset=1)`): (0,1), (0,2), …, (1,2), …
    case upper
}

/// The low-rank cross network of `interaction: "dcn"`: `layers` layers over x₀ of width (n+1)·dim, each
/// with V_l [lowRank × width], W_l [width × lowRank] and b_l [width].
public struct CrossNetworkConfig: Codable, Sendable, Equatable {
    public var layers: Int
    public var lowRank: Int

    public init(layers: Int, lowRank: Int) {
        self.layers = layers
        self.lowRank = lowRank
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case layers
        case lowRank = "low_rank"
    }

    public init(from decoder: Decoder) throws {
        try StrictKeys.check(decoder, allowed: CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        layers = try c.decode(Int.self, forKey: .layers)
        lowRank = try c.decode(Int.self, forKey: .lowRank)
    }
}

/// Which tensor names the weights file uses (see `WeightNames`).
public enum WeightNaming: String, Codable, Sendable, CaseIterable {
    /// facebookresearch/dlrm's `DLRM_Net.state_dict()`: `emb_l.{t}.weight`, `bot_l.{2k}.*`, `top_l.{2k}.*`.
    case dlrm
    /// TorchRec 1.6's `DLRM` / `DLRM_DCN` `state_dict()`: `sparse_arch.embedding_bag_collection.embedding_bags.
    /// <table>.weight`, `dense_arch.model._mlp.{k}._linear.*`, `inter_arch.crossnet.{V,W}_kernels.{l}`,
    /// `inter_arch.crossnet.bias.{l}`, `over_arch.model.0._mlp.{k}._linear.*`, `over_arch.model.1.*`.
    case torchrec
}

/// One embedding table: `rows` × `dim`.
public struct TableConfig: Codable, Sendable, Equatable {
    public var rows: Int
    public var dim: Int
    public var pooling: PoolingMode
    public var dtype: StorageType
    /// The table's name in a TorchRec checkpoint (`embedding_bags.<name>.weight`); default `t_cat_<t>`
    /// (MLPerf DLRM-v2's names).
    public var name: String?
    /// Lookups per bag when every bag of this table has the same number (MLPerf DLRM-v2's multi-hot
    /// sizes); synthetic data and benchmarks use it. Requests may still send bags of any length.
    public var multiHot: Int?

    public init(rows: Int, dim: Int, pooling: PoolingMode = .sum, dtype: StorageType = .fp32, name: String? = nil,
                multiHot: Int? = nil) {
        self.rows = rows
        self.dim = dim
        self.pooling = pooling
        self.dtype = dtype
        self.name = name
        self.multiHot = multiHot
    }

    public var byteCount: Int { rows * dtype.rowBytes(dim: dim) }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case rows, dim, pooling, dtype, name
        case multiHot = "multi_hot"
    }

    public init(from decoder: Decoder) throws {
        try StrictKeys.check(decoder, allowed: CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rows = try c.decode(Int.self, forKey: .rows)
        dim = try c.decode(Int.self, forKey: .dim)
        pooling = try c.decodeIfPresent(PoolingMode.self, forKey: .pooling) ?? .sum
        dtype = try c.decodeIfPresent(StorageType.self, forKey: .dtype) ?? .fp32
        name = try c.decodeIfPresent(String.self, forKey: .name)
        multiHot = try c.decodeIfPresent(Int.self, forKey: .multiHot)
    }
}

/// The architecture of a DLRM, as stored in `model.json`.
///
/// `bottomMLP` lists the output width of each bottom layer (its input is `denseFeatures`);
/// `topMLP` lists the output width of each top layer (its input is `topInputWidth`), the last
/// being 1 (the click logit).
public struct ModelConfig: Codable, Sendable, Equatable {
    public static let formatName = "bagel-dlrm"
    public static let currentVersion = 1

    public var format: String
    public var version: Int
    public var name: String
    public var denseFeatures: Int
    public var bottomMLP: [Int]
    public var tables: [TableConfig]
    public var interaction: InteractionOp
    public var topMLP: [Int]
    /// Typical lookups per bag (pooling factor); used by synthetic data and benchmarks only.
    public var lookupsPerTable: Int
    /// Embedding-stage options (kernel variant, hot rows); nil means defaults.
    public var embedding: EmbeddingOptions?
    /// The dot interaction's pair order; nil means `lower` (facebookresearch/dlrm).
    public var dotPairs: DotPairOrder?
    /// The cross network of `interaction: "dcn"` (required there, absent otherwise).
    public var crossNetwork: CrossNetworkConfig?
    /// The weights file's tensor names; nil means: found from the file (`WeightNaming.detect`).
    public var weightNames: WeightNaming?

    public init(
        name: String, denseFeatures: Int, bottomMLP: [Int], tables: [TableConfig],
        interaction: InteractionOp = .dot, topMLP: [Int], lookupsPerTable: Int = 1,
        embedding: EmbeddingOptions? = nil, dotPairs: DotPairOrder? = nil, crossNetwork: CrossNetworkConfig? = nil,
        weightNames: WeightNaming? = nil
    ) {
        self.format = Self.formatName
        self.version = Self.currentVersion
        self.name = name
        self.denseFeatures = denseFeatures
        self.bottomMLP = bottomMLP
        self.tables = tables
        self.interaction = interaction
        self.topMLP = topMLP
        self.lookupsPerTable = lookupsPerTable
        self.embedding = embedding
        self.dotPairs = dotPairs
        self.crossNetwork = crossNetwork
        self.weightNames = weightNames
    }

    /// The dot interaction's pair order (`lower` unless the model says otherwise).
    public var pairOrder: DotPairOrder { dotPairs ?? .lower }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case format, version, name
        case denseFeatures = "dense_features"
        case bottomMLP = "bottom_mlp"
        case tables, interaction
        case topMLP = "top_mlp"
        case lookupsPerTable = "lookups_per_table"
        case embedding
        case dotPairs = "dot_pairs"
        case crossNetwork = "dcn"
        case weightNames = "weight_names"
    }

    public init(from decoder: Decoder) throws {
        try StrictKeys.check(decoder, allowed: CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        format = try c.decode(String.self, forKey: .format)
        version = try c.decode(Int.self, forKey: .version)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? "model"
        denseFeatures = try c.decode(Int.self, forKey: .denseFeatures)
        bottomMLP = try c.decode([Int].self, forKey: .bottomMLP)
        tables = try c.decode([TableConfig].self, forKey: .tables)
        interaction = try c.decodeIfPresent(InteractionOp.self, forKey: .interaction) ?? .dot
        topMLP = try c.decode([Int].self, forKey: .topMLP)
        lookupsPerTable = try c.decodeIfPresent(Int.self, forKey: .lookupsPerTable) ?? 1
        embedding = try c.decodeIfPresent(EmbeddingOptions.self, forKey: .embedding)
        dotPairs = try c.decodeIfPresent(DotPairOrder.self, forKey: .dotPairs)
        crossNetwork = try c.decodeIfPresent(CrossNetworkConfig.self, forKey: .crossNetwork)
        weightNames = try c.decodeIfPresent(WeightNaming.self, forKey: .weightNames)
    }

    /// Width of the bottom MLP's output (x).
    public var bottomOutputWidth: Int { bottomMLP.last ?? denseFeatures }

    /// The narrowest index type every table's rows fit: int32 unless a table has more than Int32.max rows.
    public var narrowestIndexType: IndexType {
        tables.allSatisfy { $0.rows <= Int(Int32.max) } ? .int32 : .int64
    }

    /// Width of the interaction output r, which is the top MLP's input.
    public var topInputWidth: Int {
        switch interaction {
        case .dot:
            let n = tables.count
            return bottomOutputWidth + (n + 1) * n / 2
        case .cat, .dcn:
            return bottomOutputWidth + tables.reduce(0) { $0 + $1.dim }
        }
    }

    /// Width of x₀ = [x, e₁ … eₙ], the cross network's input and output (`dcn`).
    public var crossWidth: Int { bottomOutputWidth + tables.reduce(0) { $0 + $1.dim } }

    /// Number of parameters: embedding rows, Linear weights and biases, cross-network kernels.
    public var parameterCount: Int {
        var count = tables.reduce(0) { $0 + $1.rows * $1.dim }
        if interaction == .dcn, let cross = crossNetwork {
            count += cross.layers * (2 * cross.lowRank * crossWidth + crossWidth)
        }
        for (input, output) in Self.layerShapes(input: denseFeatures, widths: bottomMLP) {
            count += input * output + output
        }
        for (input, output) in Self.layerShapes(input: topInputWidth, widths: topMLP) {
            count += input * output + output
        }
        return count
    }

    /// (in, out) of each Linear layer of an MLP with the given input width.
    public static func layerShapes(input: Int, widths: [Int]) -> [(input: Int, output: Int)] {
        var shapes: [(Int, Int)] = []
        var previous = input
        for width in widths {
            shapes.append((previous, width))
            previous = width
        }
        return shapes
    }

    /// Checks every constraint the engines rely on; the error names the offending field.
    public func validate(source: String = "model.json") throws {
        func fail(_ field: String, _ why: String) -> BagelError {
            BagelError(.invalidModel, "\(source): \(field): \(why)")
        }
        guard format == Self.formatName else {
            throw fail("format", "expected \"\(Self.formatName)\", found \"\(format)\"")
        }
        guard version == Self.currentVersion else {
            throw fail("version", "this Bagel reads version \(Self.currentVersion), the file is version \(version)")
        }
        guard denseFeatures >= 1 else { throw fail("dense_features", "must be at least 1, found \(denseFeatures)") }
        guard !bottomMLP.isEmpty else { throw fail("bottom_mlp", "needs at least one layer") }
        for (i, width) in bottomMLP.enumerated() where width < 1 {
            throw fail("bottom_mlp[\(i)]", "layer width must be at least 1, found \(width)")
        }
        guard !tables.isEmpty else { throw fail("tables", "needs at least one embedding table") }
        for (t, table) in tables.enumerated() {
            guard table.rows >= 1 else { throw fail("tables[\(t)].rows", "must be at least 1, found \(table.rows)") }
            guard table.rows <= Int(Int32.max) * 64 else {
                throw fail("tables[\(t)].rows", "\(table.rows) rows is beyond what Bagel supports")
            }
            guard table.dim >= 1 && table.dim <= 4096 else {
                throw fail("tables[\(t)].dim", "must be between 1 and 4096, found \(table.dim)")
            }
            if let why = table.dtype.unsupported(dim: table.dim) { throw fail("tables[\(t)].dim", why) }
            if interaction != .cat && table.dim != bottomOutputWidth {
                throw fail(
                    "tables[\(t)].dim",
                    "the \(interaction.rawValue) interaction needs every table's dim equal to the bottom MLP output "
                        + "(\(bottomOutputWidth)), found \(table.dim)")
            }
            if let hot = table.multiHot, hot < 1 {
                throw fail("tables[\(t)].multi_hot", "must be at least 1, found \(hot)")
            }
            if let name = table.name, name.isEmpty || name.contains(where: { $0 == "." || $0.isWhitespace }) {
                throw fail("tables[\(t)].name", "\"\(name)\" cannot name a tensor (no dots, no spaces, not empty)")
            }
        }
        switch (interaction, crossNetwork) {
        case (.dcn, nil):
            throw fail("dcn", "interaction \"dcn\" needs {\"layers\": L, \"low_rank\": R}")
        case (.dcn, let cross?):
            guard cross.layers >= 1 else { throw fail("dcn.layers", "must be at least 1, found \(cross.layers)") }
            guard cross.lowRank >= 1 else { throw fail("dcn.low_rank", "must be at least 1, found \(cross.lowRank)") }
        case (_, .some):
            throw fail("dcn", "only the \"dcn\" interaction has a cross network (this model's is \"\(interaction.rawValue)\")")
        default:
            break
        }
        if dotPairs != nil && interaction != .dot {
            throw fail("dot_pairs", "only the \"dot\" interaction has pairs (this model's is \"\(interaction.rawValue)\")")
        }
        if weightNames == .torchrec && topMLP.count < 2 {
            throw fail("top_mlp", "TorchRec's over arch has at least two layers (an MLP and the final Linear), found 1")
        }
        guard !topMLP.isEmpty else { throw fail("top_mlp", "needs at least one layer") }
        for (i, width) in topMLP.enumerated() where width < 1 {
            throw fail("top_mlp[\(i)]", "layer width must be at least 1, found \(width)")
        }
        guard topMLP.last == 1 else {
            throw fail("top_mlp", "the last layer gives the click logit and must have width 1, found \(topMLP.last!)")
        }
        guard lookupsPerTable >= 0 else { throw fail("lookups_per_table", "must not be negative") }
        try embedding?.validate(source: source, tableCount: tables.count)
    }

    /// Reads and validates `model.json`.
    public static func load(path: String) throws -> ModelConfig {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw BagelError(.io, "\(path): cannot read the model description (\(error.localizedDescription))")
        }
        let config: ModelConfig
        do {
            config = try JSONDecoder().decode(ModelConfig.self, from: data)
        } catch let error as DecodingError {
            throw BagelError(.invalidModel, "\(path): \(describe(error))")
        } catch let error as BagelError {
            throw BagelError(error.kind, "\(path): \(error.message)")
        } catch {
            throw BagelError(.invalidModel, "\(path): not valid JSON (\(error))")
        }
        try config.validate(source: path)
        return config
    }

    /// The JSON text written to `model.json` (sorted keys, so files diff cleanly).
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }
}

/// Embedding-stage options stored with a model (`"embedding": {...}` in model.json).
public struct EmbeddingOptions: Codable, Sendable, Equatable {
    /// Kernel variant name (`auto`, `baseline`, `vectorized`, ...); see `EmbeddingBagVariant`.
    public var variant: String?
    /// Per-table hot-row files (relative to the model directory), as written by `bagel profile`.
    public var hotRows: [String]?

    public init(variant: String? = nil, hotRows: [String]? = nil) {
        self.variant = variant
        self.hotRows = hotRows
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case variant
        case hotRows = "hot_rows"
    }

    public init(from decoder: Decoder) throws {
        try StrictKeys.check(decoder, allowed: CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        variant = try c.decodeIfPresent(String.self, forKey: .variant)
        hotRows = try c.decodeIfPresent([String].self, forKey: .hotRows)
    }

    func validate(source: String, tableCount: Int) throws {
        if let hotRows, hotRows.count != tableCount {
            throw BagelError(
                .invalidModel,
                "\(source): embedding.hot_rows: expected one file per table (\(tableCount)), found \(hotRows.count)")
        }
    }
}

/// Rejects unknown keys, so a typo such as "bottom_mpl" is an error instead of a silent default.
enum StrictKeys {
    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    static func check(_ decoder: Decoder, allowed: [String]) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        for key in container.allKeys where !allowed.contains(key.stringValue) {
            let path = (decoder.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: ".")
            throw BagelError(
                .invalidModel,
                "unknown field \"\(path)\" (known fields here: \(allowed.joined(separator: ", ")))")
        }
    }
}

/// Turns a DecodingError into "field.path: what was wrong".
func describe(_ error: DecodingError) -> String {
    func path(_ codingPath: [CodingKey]) -> String {
        var text = ""
        for key in codingPath {
            if let index = key.intValue {
                text += "[\(index)]"
            } else {
                text += text.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return text.isEmpty ? "(top level)" : text
    }
    switch error {
    case .keyNotFound(let key, let context):
        let parent = path(context.codingPath)
        let field = parent == "(top level)" ? key.stringValue : "\(parent).\(key.stringValue)"
        return "\(field): required field is missing"
    case .typeMismatch(let type, let context):
        return "\(path(context.codingPath)): expected \(typeName(type))"
    case .valueNotFound(let type, let context):
        return "\(path(context.codingPath)): expected \(typeName(type)), found null"
    case .dataCorrupted(let context):
        if context.codingPath.isEmpty {
            return "not valid JSON"
        }
        return "\(path(context.codingPath)): \(context.debugDescription)"
    @unknown default:
        return "\(error)"
    }
}

private func typeName(_ type: Any.Type) -> String {
    switch type {
    case is Int.Type: return "an integer"
    case is String.Type: return "a string"
    case is [Int].Type: return "a list of integers"
    case is [String].Type: return "a list of strings"
    default: return "\(type)"
    }
}
