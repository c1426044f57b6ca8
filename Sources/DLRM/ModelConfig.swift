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
    /// DLRM's pairwise dot products: the strict lower triangle of T·Tᵀ, row-major, after x.
    case dot
    /// Plain concatenation [x, e₁ … eₙ].
    case cat
}

/// One embedding table: `rows` × `dim`.
public struct TableConfig: Codable, Sendable, Equatable {
    public var rows: Int
    public var dim: Int
    public var pooling: PoolingMode
    public var dtype: StorageType

    public init(rows: Int, dim: Int, pooling: PoolingMode = .sum, dtype: StorageType = .fp32) {
        self.rows = rows
        self.dim = dim
        self.pooling = pooling
        self.dtype = dtype
    }

    public var byteCount: Int { rows * dtype.rowBytes(dim: dim) }

    enum CodingKeys: String, CodingKey, CaseIterable { case rows, dim, pooling, dtype }

    public init(from decoder: Decoder) throws {
        try StrictKeys.check(decoder, allowed: CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rows = try c.decode(Int.self, forKey: .rows)
        dim = try c.decode(Int.self, forKey: .dim)
        pooling = try c.decodeIfPresent(PoolingMode.self, forKey: .pooling) ?? .sum
        dtype = try c.decodeIfPresent(StorageType.self, forKey: .dtype) ?? .fp32
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

    public init(
        name: String, denseFeatures: Int, bottomMLP: [Int], tables: [TableConfig],
        interaction: InteractionOp = .dot, topMLP: [Int], lookupsPerTable: Int = 1,
        embedding: EmbeddingOptions? = nil
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
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case format, version, name
        case denseFeatures = "dense_features"
        case bottomMLP = "bottom_mlp"
        case tables, interaction
        case topMLP = "top_mlp"
        case lookupsPerTable = "lookups_per_table"
        case embedding
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
    }

    /// Width of the bottom MLP's output (x).
    public var bottomOutputWidth: Int { bottomMLP.last ?? denseFeatures }

    /// Width of the interaction output r, which is the top MLP's input.
    public var topInputWidth: Int {
        switch interaction {
        case .dot:
            let n = tables.count
            return bottomOutputWidth + (n + 1) * n / 2
        case .cat:
            return bottomOutputWidth + tables.reduce(0) { $0 + $1.dim }
        }
    }

    /// Number of parameters: embedding rows plus Linear weights and biases.
    public var parameterCount: Int {
        var count = tables.reduce(0) { $0 + $1.rows * $1.dim }
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
            if table.dtype == .int8 && table.dim % 4 != 0 {
                throw fail("tables[\(t)].dim", "int8 rows need a dim that is a multiple of 4 (the row's scale and bias "
                                                + "follow its codes, 4-byte aligned), found \(table.dim)")
            }
            if interaction == .dot && table.dim != bottomOutputWidth {
                throw fail(
                    "tables[\(t)].dim",
                    "the dot interaction needs every table's dim equal to the bottom MLP output "
                        + "(\(bottomOutputWidth)), found \(table.dim)")
            }
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
