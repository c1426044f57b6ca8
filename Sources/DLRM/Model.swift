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
    }

    /// Allocates `byteCount` bytes and lets `fill` write them once.
    public init(byteCount: Int, fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        let memory = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        do {
            try fill(UnsafeMutableRawBufferPointer(start: memory, count: byteCount))
        } catch {
            memory.deallocate()
            throw error
        }
        self.owned = memory
        self.owner = nil
        self.bytes = UnsafeRawBufferPointer(start: memory, count: byteCount)
    }

    deinit { owned?.deallocate() }
}

/// One embedding table, `rows` × `dim` elements of `dtype`, row-major (int8: each row followed by its
/// scale and bias, `RowwiseInt8`).
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
        let offset = row * dtype.rowBytes(dim: dim) + column * dtype.byteWidth
        switch dtype {
        case .int8:
            return RowwiseInt8.value(row: storage.bytes.baseAddress! + row * dtype.rowBytes(dim: dim), dim: dim, column: column)
        case .fp32: return storage.bytes.loadUnaligned(fromByteOffset: offset, as: Float.self)
        case .fp16: return NumericConversion.floatFromFP16(storage.bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
        case .bf16: return NumericConversion.floatFromBF16(storage.bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
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

/// A DLRM: its architecture and its weights, immutable once loaded.
public final class Model: Sendable {
    public static let configFileName = "model.json"
    public static let weightsFileName = "weights.safetensors"

    public let config: ModelConfig
    public let tables: [EmbeddingTable]
    public let bottom: [DenseLayer]
    public let top: [DenseLayer]
    /// The directory the model was loaded from, if any (hot-row files are relative to it).
    public let directory: String?

    public init(config: ModelConfig, tables: [EmbeddingTable], bottom: [DenseLayer], top: [DenseLayer],
                directory: String? = nil) throws {
        try config.validate()
        guard tables.count == config.tables.count, bottom.count == config.bottomMLP.count,
            top.count == config.topMLP.count
        else { throw BagelError(.invalidModel, "weights do not match the architecture") }
        self.config = config
        self.tables = tables
        self.bottom = bottom
        self.top = top
        self.directory = directory
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
            let name = WeightNames.embedding(t)
            if table.dtype == .int8 {
                tables.append(try loadInt8(file: file, table: table, index: t, path: weightsPath, tensor: tensor))
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

        func layers(prefix: String, input: Int, widths: [Int], field: String) throws -> [DenseLayer] {
            try ModelConfig.layerShapes(input: input, widths: widths).enumerated().map { k, shape in
                let what = "\(field)[\(k)], a Linear \(shape.input)→\(shape.output)"
                let w = try tensor(WeightNames.weight(prefix, k), shape: [shape.output, shape.input], what: what)
                let b = try tensor(WeightNames.bias(prefix, k), shape: [shape.output], what: what)
                return DenseLayer(input: shape.input, output: shape.output, weight: try file.floats(w),
                                  bias: try file.floats(b))
            }
        }
        let bottom = try layers(prefix: "bot_l", input: config.denseFeatures, widths: config.bottomMLP, field: "bottom_mlp")
        let top = try layers(prefix: "top_l", input: config.topInputWidth, widths: config.topMLP, field: "top_mlp")
        return try Model(config: config, tables: tables, bottom: bottom, top: top, directory: directory)
    }

    /// An int8 table: FBGEMM's fused rows (U8, [rows, dim + 8]) used in place, or float rows
    /// ([rows, dim]) quantised on load.
    static func loadInt8(file: SafeTensorsFile, table: TableConfig, index t: Int, path: String,
                         tensor: (String, [Int], String) throws -> SafeTensorsFile.TensorInfo) throws -> EmbeddingTable {
        let name = WeightNames.embedding(t)
        let storage: TensorStorage
        if file.tensors[name]?.dtype == .U8 {
            let info = try tensor(name, [table.rows, table.dim + RowwiseInt8.extraBytes],
                                  "tables[\(t)] with rows=\(table.rows), dim=\(table.dim), dtype int8 "
                                      + "(each row: dim uint8 codes, fp32 scale, fp32 bias)")
            storage = TensorStorage(borrowing: file.bytes(of: info), owner: file)
        } else {
            let info = try tensor(name, [table.rows, table.dim],
                                  "tables[\(t)] with rows=\(table.rows), dim=\(table.dim) (quantised to int8 on load)")
            guard info.dtype.isFloatingPoint else {
                throw BagelError(.invalidWeights, "\(path): tensor \(name) has dtype \(info.dtype.rawValue); an int8 table "
                                 + "reads U8 fused rows or F32/F16/BF16/F64 rows to quantise")
            }
            storage = try TensorStorage(byteCount: table.byteCount) { out in
                if let row = RowwiseInt8.quantizeRows(source: file.bytes(of: info), sourceType: info.dtype, rows: table.rows,
                                                      dim: table.dim, destination: out) {
                    throw BagelError(.invalidWeights, "\(path): tensor \(name) row \(row) holds a NaN or an infinity; "
                                     + "int8 quantisation needs finite rows")
                }
            }
        }
        return EmbeddingTable(rows: table.rows, dim: table.dim, dtype: .int8, pooling: table.pooling, storage: storage)
    }

    /// A model with weights drawn as `bagel init` draws them (same seed, same numbers), in memory.
    public static func random(config: ModelConfig, seed: UInt64) throws -> Model {
        try config.validate()
        let entries = WeightInitializer.entries(for: config)
        var tables: [EmbeddingTable] = []
        var bottom: [DenseLayer] = []
        var top: [DenseLayer] = []
        var pendingWeight: [Float] = []
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
            }
        }
        return try Model(config: config, tables: tables, bottom: bottom, top: top)
    }

    /// Total bytes of the embedding tables and the MLP weights as held in memory.
    public var byteCount: Int {
        tables.reduce(0) { $0 + $1.storage.bytes.count }
            + (bottom + top).reduce(0) { $0 + ($1.weight.count + $1.bias.count) * 4 }
    }
}

/// Tensor names of the reference PyTorch DLRM (`DLRM_Net.state_dict()`): Linear layers sit at the
/// even indices of `bot_l`/`top_l` (the odd ones are the activations).
public enum WeightNames {
    public static func embedding(_ table: Int) -> String { "emb_l.\(table).weight" }
    public static func weight(_ prefix: String, _ layer: Int) -> String { "\(prefix).\(2 * layer).weight" }
    public static func bias(_ prefix: String, _ layer: Int) -> String { "\(prefix).\(2 * layer).bias" }
}
