import Core
import Foundation

/// Bytes of one tensor: either owned (allocated, 64-byte aligned) or borrowed from a memory-mapped
/// safetensors file that this object keeps alive. Immutable once built.
public final class TensorStorage: @unchecked Sendable {
    public let bytes: UnsafeRawBufferPointer
    private let owner: AnyObject?
    private let owned: UnsafeMutableRawPointer?

    /// Borrows `bytes`, which stay valid while `owner` lives.
    public init(borrowing bytes: UnsafeRawBufferPointer, owner: AnyObject) {
        self.bytes = bytes
        self.owner = owner
        self.owned = nil
        ownsWholePages = false
    }

    /// Allocates `byteCount` bytes and lets `fill` write them once. Tensors of a page or more get whole
    /// pages of their own (`ownsWholePages`), so the GPU's host tier can lock them in place without
    /// touching a neighbour.
    public init(byteCount: Int, fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        let page = Self.pageSize
        let whole = byteCount >= page
        let memory = whole
            ? UnsafeMutableRawPointer.allocate(byteCount: (byteCount + page - 1) / page * page, alignment: page)
            : UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        do {
            try fill(UnsafeMutableRawBufferPointer(start: memory, count: byteCount))
        } catch {
            memory.deallocate()
            throw error
        }
        self.owned = memory
        self.owner = nil
        self.bytes = UnsafeRawBufferPointer(start: memory, count: byteCount)
        ownsWholePages = whole
    }

    /// The bytes start a page and nothing else lives in their last page (allocated here, a page or more).
    public let ownsWholePages: Bool

    /// The host's page size.
    public static let pageSize = max(Int(sysconf(Int32(_SC_PAGESIZE))), 4096)

    deinit { owned?.deallocate() }
}

/// One embedding table, `rows` × `dim` elements of `dtype`, row-major (int8, int4: each row followed by
/// its scale and bias, `RowwiseInt8`, `RowwiseInt4`).
public struct EmbeddingTable: Sendable {
    public let rows: Int
    public let dim: Int
    public let dtype: StorageType
    public let pooling: PoolingMode
    public let storage: TensorStorage

    public init(rows: Int, dim: Int, dtype: StorageType, pooling: PoolingMode, storage: TensorStorage) {
        precondition(storage.bytes.count == rows * dtype.rowBytes(dim: dim), "table storage size mismatch")
        self.rows = rows
        self.dim = dim
        self.dtype = dtype
        self.pooling = pooling
        self.storage = storage
    }

    /// Element (row, column) as Float, for tests and slow paths.
    public func value(row: Int, column: Int) -> Float {
        let start = storage.bytes.baseAddress! + row * dtype.rowBytes(dim: dim)
        switch dtype {
        case .int8, .int4: return RowwiseQuantized.value(row: start, dim: dim, column: column, type: dtype)
        case .fp32: return start.loadUnaligned(fromByteOffset: column * 4, as: Float.self)
        case .fp16: return NumericConversion.floatFromFP16(start.loadUnaligned(fromByteOffset: column * 2, as: UInt16.self))
        case .bf16: return NumericConversion.floatFromBF16(start.loadUnaligned(fromByteOffset: column * 2, as: UInt16.self))
        }
    }
}

/// A Linear layer: y = W·x + b with W of shape [output, input], row-major (PyTorch's layout).
public struct DenseLayer: Sendable {
    public let input: Int
    public let output: Int
    public let weight: [Float]
    public let bias: [Float]

    public init(input: Int, output: Int, weight: [Float], bias: [Float]) {
        precondition(weight.count == input * output && bias.count == output, "layer shape mismatch")
        self.input = input
        self.output = output
        self.weight = weight
        self.bias = bias
    }
}

/// One layer of the low-rank cross network: x_{l+1} = x₀ ⊙ (W (V x_l) + b) + x_l. `v` has no bias
/// (zeros), `w` carries b.
public struct CrossLayer: Sendable {
    public let v: DenseLayer
    public let w: DenseLayer

    public init(v: DenseLayer, w: DenseLayer) {
        precondition(v.output == w.input && v.input == w.output, "cross layer shape mismatch")
        self.v = v
        self.w = w
    }
}

/// A DLRM: its architecture and its weights, immutable once loaded.
public final class Model: Sendable {
    public static let configFileName = "model.json"
    public static let weightsFileName = "weights.safetensors"

    public let config: ModelConfig
    public let tables: [EmbeddingTable]
    public let bottom: [DenseLayer]
    public let top: [DenseLayer]
    /// The cross network's layers (`dcn`; empty otherwise).
    public let cross: [CrossLayer]
    /// The directory the model was loaded from, if any (hot-row files are relative to it).
    public let directory: String?
    /// The tensor names its weights file used (nil for a model built in memory).
    public let weightNaming: WeightNaming?

    public init(config: ModelConfig, tables: [EmbeddingTable], bottom: [DenseLayer], top: [DenseLayer],
                cross: [CrossLayer] = [], directory: String? = nil, weightNaming: WeightNaming? = nil) throws {
        try config.validate()
        guard tables.count == config.tables.count, bottom.count == config.bottomMLP.count,
            top.count == config.topMLP.count, cross.count == (config.interaction == .dcn ? config.crossNetwork!.layers : 0)
        else { throw BagelError(.invalidModel, "weights do not match the architecture") }
        self.config = config
        self.tables = tables
        self.bottom = bottom
        self.top = top
        self.cross = cross
        self.directory = directory
        self.weightNaming = weightNaming
    }

    /// Loads `DIR/model.json` and `DIR/weights.safetensors`, checking every tensor against the config.
    public static func load(directory: String) throws -> Model {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw BagelError(.io, "\(directory): no such model directory (create one with `bagel init`)")
        }
        let configPath = (directory as NSString).appendingPathComponent(configFileName)
        let weightsPath = (directory as NSString).appendingPathComponent(weightsFileName)
        let config = try ModelConfig.load(path: configPath)
        guard FileManager.default.fileExists(atPath: weightsPath) else {
            throw BagelError(.io, "\(weightsPath): missing weights file (model.json is there, the weights are not)")
        }
        let file = try SafeTensorsFile(path: weightsPath)
        guard let naming = config.weightNames ?? WeightNames.detect(file.tensors.keys) else {
            throw BagelError(
                .invalidWeights,
                "\(weightsPath): cannot tell which tensor names the file uses (neither facebookresearch/dlrm's emb_l/bot_l/"
                    + "top_l nor TorchRec's sparse_arch/dense_arch/over_arch); set \"weight_names\" in model.json")
        }
        let names = WeightNames(naming, config: config)

        func tensor(_ name: String, shape: [Int], what: String) throws -> SafeTensorsFile.TensorInfo {
            guard let info = file.tensors[name] else {
                throw BagelError(.invalidWeights, "\(weightsPath): no tensor \(name) (\(what) in model.json)")
            }
            guard info.shape == shape else {
                throw BagelError(
                    .invalidWeights,
                    "\(weightsPath): tensor \(name) has shape \(info.shape) but model.json's \(what) needs \(shape)")
            }
            return info
        }

        var tables: [EmbeddingTable] = []
        for (t, table) in config.tables.enumerated() {
            let name = names.embedding(t)
            if table.dtype.isRowwiseQuantized {
                tables.append(try loadQuantized(file: file, table: table, name: name, index: t, path: weightsPath, tensor: tensor))
                continue
            }
            let info = try tensor(
                name, shape: [table.rows, table.dim], what: "tables[\(t)] with rows=\(table.rows), dim=\(table.dim)")
            let storage: TensorStorage
            let bytes = file.bytes(of: info)
            let aligned = Int(bitPattern: bytes.baseAddress) % table.dtype.byteWidth == 0
            if info.dtype == SafeTensorsDType(table.dtype) && aligned {
                storage = TensorStorage(borrowing: bytes, owner: file)  // in place: no copy of the table
            } else {
                storage = try TensorStorage(byteCount: table.byteCount) { out in
                    try file.convert(info, to: table.dtype, into: out)
                }
            }
            tables.append(
                EmbeddingTable(rows: table.rows, dim: table.dim, dtype: table.dtype, pooling: table.pooling,
                               storage: storage))
        }

        func layers(input: Int, widths: [Int], field: String, name: (Int) -> (weight: String, bias: String)) throws
            -> [DenseLayer]
        {
            try ModelConfig.layerShapes(input: input, widths: widths).enumerated().map { k, shape in
                let what = "\(field)[\(k)], a Linear \(shape.input)→\(shape.output)"
                let w = try tensor(name(k).weight, shape: [shape.output, shape.input], what: what)
                let b = try tensor(name(k).bias, shape: [shape.output], what: what)
                return DenseLayer(input: shape.input, output: shape.output, weight: try file.floats(w),
                                  bias: try file.floats(b))
            }
        }
        let bottom = try layers(input: config.denseFeatures, widths: config.bottomMLP, field: "bottom_mlp", name: names.bottom)
        let top = try layers(input: config.topInputWidth, widths: config.topMLP, field: "top_mlp", name: names.top)
        var cross: [CrossLayer] = []
        if config.interaction == .dcn, let shape = config.crossNetwork {
            let (width, rank) = (config.crossWidth, shape.lowRank)
            for l in 0..<shape.layers {
                let what = "dcn layer \(l) (width \(width), low_rank \(rank))"
                let v = try tensor(names.cross(l).v, shape: [rank, width], what: what)
                let w = try tensor(names.cross(l).w, shape: [width, rank], what: what)
                let b = try tensor(names.cross(l).bias, shape: [width], what: what)
                cross.append(CrossLayer(
                    v: DenseLayer(input: width, output: rank, weight: try file.floats(v), bias: [Float](repeating: 0, count: rank)),
                    w: DenseLayer(input: rank, output: width, weight: try file.floats(w), bias: try file.floats(b))))
            }
        }
        return try Model(config: config, tables: tables, bottom: bottom, top: top, cross: cross, directory: directory,
                         weightNaming: naming)
    }

    /// A row-wise quantised table (int8, int4): FBGEMM's fused rows (U8, [rows, rowBytes]) used in
    /// place, or float rows ([rows, dim]) quantised on load.
    static func loadQuantized(file: SafeTensorsFile, table: TableConfig, name: String, index t: Int, path: String,
                              tensor: (String, [Int], String) throws -> SafeTensorsFile.TensorInfo) throws -> EmbeddingTable {
        let type = table.dtype
        let storage: TensorStorage
        if file.tensors[name]?.dtype == .U8 {
            let info = try tensor(name, [table.rows, type.rowBytes(dim: table.dim)],
                                  "tables[\(t)] with rows=\(table.rows), dim=\(table.dim), dtype \(type) "
                                      + "(\(RowwiseQuantized.layoutDescription(type)))")
            storage = TensorStorage(borrowing: file.bytes(of: info), owner: file)
        } else {
            let info = try tensor(name, [table.rows, table.dim],
                                  "tables[\(t)] with rows=\(table.rows), dim=\(table.dim) (quantised to \(type) on load)")
            guard info.dtype.isFloatingPoint else {
                throw BagelError(.invalidWeights, "\(path): tensor \(name) has dtype \(info.dtype.rawValue); an \(type) table "
                                 + "reads U8 fused rows or F32/F16/BF16/F64 rows to quantise")
            }
            storage = try TensorStorage(byteCount: table.byteCount) { out in
                if let row = RowwiseQuantized.quantizeRows(to: type, source: file.bytes(of: info), sourceType: info.dtype,
                                                           rows: table.rows, dim: table.dim, destination: out) {
                    throw BagelError(.invalidWeights, "\(path): tensor \(name) row \(row) cannot be quantised: "
                                     + RowwiseQuantized.failureReason(type))
                }
            }
        }
        return EmbeddingTable(rows: table.rows, dim: table.dim, dtype: type, pooling: table.pooling, storage: storage)
    }

    /// A model with weights drawn as `bagel init` draws them (same seed, same numbers), in memory.
    public static func random(config: ModelConfig, seed: UInt64) throws -> Model {
        try config.validate()
        let entries = WeightInitializer.entries(for: config)
        var tables: [EmbeddingTable] = []
        var bottom: [DenseLayer] = []
        var top: [DenseLayer] = []
        var cross: [CrossLayer] = []
        var pendingWeight: [Float] = []
        var pendingV: [Float] = []
        for (index, entry) in entries.enumerated() {
            switch entry.role {
            case .embedding(let t):
                let table = config.tables[t]
                let storage = TensorStorage(byteCount: table.byteCount) { out in
                    WeightInitializer.generate(entry, index: index, seed: seed, dtype: table.dtype, into: out)
                }
                tables.append(
                    EmbeddingTable(rows: table.rows, dim: table.dim, dtype: table.dtype, pooling: table.pooling,
                                   storage: storage))
            case .weight:
                pendingWeight = WeightInitializer.floats(entry, index: index, seed: seed)
            case .bias(let isTop, _, let input, let output):
                let layer = DenseLayer(input: input, output: output, weight: pendingWeight,
                                       bias: WeightInitializer.floats(entry, index: index, seed: seed))
                if isTop { top.append(layer) } else { bottom.append(layer) }
            case .cross(_, let part, let width, let rank):
                switch part {
                case .v: pendingV = WeightInitializer.floats(entry, index: index, seed: seed)
                case .w: pendingWeight = WeightInitializer.floats(entry, index: index, seed: seed)
                case .bias:
                    cross.append(CrossLayer(
                        v: DenseLayer(input: width, output: rank, weight: pendingV, bias: [Float](repeating: 0, count: rank)),
                        w: DenseLayer(input: rank, output: width, weight: pendingWeight,
                                      bias: WeightInitializer.floats(entry, index: index, seed: seed))))
                }
            }
        }
        return try Model(config: config, tables: tables, bottom: bottom, top: top, cross: cross)
    }

    /// Total bytes of the embedding tables and the MLP weights as held in memory.
    public var byteCount: Int {
        tables.reduce(0) { $0 + $1.storage.bytes.count }
            + (bottom + top + cross.flatMap { [$0.v, $0.w] }).reduce(0) { $0 + ($1.weight.count + $1.bias.count) * 4 }
    }
}

/// The tensor names of a weights file, for one model under one naming (`WeightNaming`).
///
/// facebookresearch/dlrm (`DLRM_Net.state_dict()`): Linear layers sit at the even indices of
/// `bot_l`/`top_l` (the odd ones are the activations). TorchRec (`DLRM`, `DLRM_DCN`): the dense arch is
/// an MLP of Perceptrons, the over arch an MLP then a plain Linear, tables are named (`t_cat_<t>` unless
/// model.json names them), the cross network keeps its kernels in parameter lists.
public struct WeightNames: Sendable, Equatable {
    public let naming: WeightNaming
    public let tableNames: [String]
    public let topLayers: Int

    public init(_ naming: WeightNaming, config: ModelConfig) {
        self.naming = naming
        tableNames = config.tables.enumerated().map { t, table in table.name ?? "t_cat_\(t)" }
        topLayers = config.topMLP.count
    }

    public func embedding(_ t: Int) -> String {
        switch naming {
        case .dlrm: return Self.embedding(t)
        case .torchrec: return "sparse_arch.embedding_bag_collection.embedding_bags.\(tableNames[t]).weight"
        }
    }

    /// Weight and bias of bottom (dense arch) layer k.
    public func bottom(_ k: Int) -> (weight: String, bias: String) {
        switch naming {
        case .dlrm: return ("bot_l.\(2 * k).weight", "bot_l.\(2 * k).bias")
        case .torchrec: return ("dense_arch.model._mlp.\(k)._linear.weight", "dense_arch.model._mlp.\(k)._linear.bias")
        }
    }

    /// Weight and bias of top (over arch) layer k.
    public func top(_ k: Int) -> (weight: String, bias: String) {
        switch naming {
        case .dlrm: return ("top_l.\(2 * k).weight", "top_l.\(2 * k).bias")
        case .torchrec:
            if k == topLayers - 1 { return ("over_arch.model.1.weight", "over_arch.model.1.bias") }
            return ("over_arch.model.0._mlp.\(k)._linear.weight", "over_arch.model.0._mlp.\(k)._linear.bias")
        }
    }

    /// Cross layer l's V [rank × width], W [width × rank] and bias [width] (TorchRec names under either naming:
    /// facebookresearch/dlrm has no cross network).
    public func cross(_ l: Int) -> (v: String, w: String, bias: String) {
        ("inter_arch.crossnet.V_kernels.\(l)", "inter_arch.crossnet.W_kernels.\(l)", "inter_arch.crossnet.bias.\(l)")
    }

    /// facebookresearch/dlrm's name of table t.
    public static func embedding(_ table: Int) -> String { "emb_l.\(table).weight" }

    /// The naming a file's tensors follow, or nil when neither fits.
    public static func detect(_ names: some Sequence<String>) -> WeightNaming? {
        var dlrm = false
        var torchrec = false
        for name in names {
            if name.hasPrefix("emb_l.") || name.hasPrefix("bot_l.") || name.hasPrefix("top_l.") { dlrm = true }
            if name.hasPrefix("sparse_arch.") || name.hasPrefix("dense_arch.") || name.hasPrefix("over_arch.") {
                torchrec = true
            }
        }
        return dlrm == torchrec ? nil : (dlrm ? .dlrm : .torchrec)
    }
}
