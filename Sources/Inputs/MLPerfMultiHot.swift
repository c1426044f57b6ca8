import Core
import DLRM
import Foundation

/// MLPerf DLRM-v2's multi-hot Criteo layout: a directory holding, for one day D,
///   `day_D_dense.npy`              float32 [N, 13], already transformed (used as it is),
///   `day_D_sparse_multi_hot.npz`   `0.npy` … `25.npy`, int32 (or int64) [N, hot_t], uncompressed,
///   `day_D_labels.npy`             int32 [N, 1] (optional).
/// Every file is read in place from its mapping (the real day 23 is tens of gigabytes). Batches are
/// consecutive rows; an error's `line` is the 1-based row.
public final class MLPerfMultiHotReader: SampleReader {
    public let path: String
    public let rows: Int
    let config: ModelConfig
    let dense: NumPyArray
    let sparse: [NumPyArray]
    let labels: NumPyArray?
    // Keep the mappings alive while the arrays borrow them.
    let files: [AnyObject]
    /// Where the dense features and the sparse archive are read from (`MappedFile.read`).
    let denseFile: MappedFile
    let sparseFile: MappedFile
    private var next = 0

    /// Whether `path` is a directory in this layout.
    public static func recognises(_ path: String) -> Bool { (try? day(in: path)) != nil }

    /// The day's file prefix ("day_23_") found in `directory`.
    static func day(in directory: String) throws -> String {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        guard let dense = names.sorted().first(where: { $0.hasPrefix("day_") && $0.hasSuffix("_dense.npy") }) else {
            throw BagelError(.io, "\(directory): no day_<D>_dense.npy here (MLPerf DLRM-v2's multi-hot layout: "
                             + "day_<D>_dense.npy, day_<D>_sparse_multi_hot.npz, day_<D>_labels.npy)")
        }
        return String(dense.dropLast("dense.npy".count))
    }

    public init(directory: String, config: ModelConfig) throws {
        path = directory
        self.config = config
        let prefix = try Self.day(in: directory)
        func file(_ name: String) -> String { (directory as NSString).appendingPathComponent(prefix + name) }
        let denseFile = try MappedFile(path: file("dense.npy"), what: "the dense features")
        dense = try NumPyArray(denseFile.bytes, where: denseFile.path)
        guard dense.type == .float32, dense.shape.count == 2, dense.shape[1] == config.denseFeatures else {
            throw BagelError(.invalidData, "\(denseFile.path): expected float32 [N, \(config.denseFeatures)], found "
                             + "\(dense.type.rawValue) \(dense.shape)")
        }
        let rows = dense.shape[0]
        self.rows = rows
        let archive = try NumPyArchive(path: file("sparse_multi_hot.npz"))
        sparse = try config.tables.indices.map { t in
            let array = try archive.array("\(t).npy")
            guard array.type == .int32 || array.type == .int64, array.shape.count == 2, array.shape[0] == rows else {
                throw BagelError(.invalidData, "\(archive.file.path) member \(t).npy: expected int32 [\(rows), hot] "
                                 + "(one row per sample), found \(array.type.rawValue) \(array.shape)")
            }
            return array
        }
        var mapped: [AnyObject] = [denseFile, archive.file]
        if FileManager.default.fileExists(atPath: file("labels.npy")) {
            let labelFile = try MappedFile(path: file("labels.npy"), what: "the labels")
            let array = try NumPyArray(labelFile.bytes, where: labelFile.path)
            guard array.count == rows, array.type == .int32 || array.type == .float32 else {
                throw BagelError(.invalidData, "\(labelFile.path): expected int32 [\(rows), 1], found "
                                 + "\(array.type.rawValue) \(array.shape)")
            }
            labels = array
            mapped.append(labelFile)
        } else {
            labels = nil
        }
        files = mapped
        self.denseFile = denseFile
        sparseFile = archive.file
    }

    public var bytesRead: Int { next * (config.denseFeatures * 4 + sparse.reduce(0) { $0 + $1.shape[1] * $1.type.byteWidth }) }
    public var fileSize: Int? { rows * (config.denseFeatures * 4 + sparse.reduce(0) { $0 + $1.shape[1] * $1.type.byteWidth }) }

    public func nextBatch(maxSize: Int) throws -> LabeledBatch? {
        guard next < rows else { return nil }
        let range = next..<min(rows, next + maxSize)
        next = range.upperBound
        let f = config.denseFeatures
        // Large batches copy on all cores (the paper's shape: 2048 × 256 dense values, 12 tables × 307,200 indices).
        let lookups = sparse.reduce(0) { $0 + $1.shape[1] } * range.count
        let dense: [Float] = Self.copy(dense.data, elements: (range.lowerBound * f)..<(range.upperBound * f),
                                       from: denseFile, parallel: HostParallel.worthIt(range.count * f))
        let (sparse, sparseFile) = (self.sparse, self.sparseFile)
        let features = HostParallel.map(sparse.count, parallel: HostParallel.worthIt(lookups)) { t -> SparseFeature in
            let array = sparse[t]
            let hot = array.shape[1]
            let values = (range.lowerBound * hot)..<(range.upperBound * hot)
            let offsets = (0...range.count).map { $0 * hot }
            // A table's pieces on all cores too: one table of a multi-hot model can hold half the batch's lookups.
            let parallel = HostParallel.worthIt(values.count)
            func read<T: BitwiseCopyable>() -> [T] {
                Self.copy(array.data, elements: values, from: sparseFile, parallel: parallel)
            }
            if array.type == .int32 {
                return SparseFeature(indices: .int32(read()), offsets: .int32(offsets.map(Int32.init)))
            }
            return SparseFeature(indices: .int64(read()), offsets: .int64(offsets.map(Int64.init)))
        }
        let batchLabels = labels.map { array in
            range.map { array.type == .int32 ? Float(array.data.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self))
                : array.data.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
        }
        return LabeledBatch(batch: Batch(size: range.count, denseFeatures: f, dense: dense, sparse: features),
                            labels: batchLabels, lineNumbers: range.map { $0 + 1 })
    }

    /// Elements `elements` of a little-endian array (numbers on a little-endian host: the bytes as they are),
    /// copied out byte-wise: npz members sit at any offset in the archive, so the data may not be aligned for `T`.
    /// Read from `file` (`MappedFile.read`), in pieces of 1 MB on all cores when `parallel`.
    static func copy<T: BitwiseCopyable>(_ data: UnsafeRawBufferPointer, elements: Range<Int>, from file: MappedFile,
                                         parallel: Bool = false) -> [T] {
        let size = MemoryLayout<T>.size
        let span = (elements.lowerBound * size)..<(elements.upperBound * size)
        let source = SendableRawBuffer(
            UnsafeMutableRawBufferPointer(mutating: UnsafeRawBufferPointer(rebasing: data[span])))
        return [T](unsafeUninitializedCapacity: elements.count) { buffer, count in
            let destination = SendableRawBuffer(UnsafeMutableRawBufferPointer(buffer))
            let piece = 1 << 20
            let bytes = elements.count * size
            HostParallel.forEach((bytes + piece - 1) / piece, parallel: parallel) { p in
                let part = (p * piece)..<min((p + 1) * piece, bytes)
                file.read(UnsafeRawBufferPointer(rebasing: source.buffer[part]),
                          into: destination.buffer.baseAddress! + part.lowerBound)
            }
            count = elements.count
        }
    }

    /// Writes `rows` samples of synthetic traffic for `config` in this layout (day 0): dense uniform in
    /// [0, 1), each table's multi-hot size (`multi_hot`, else the model's lookups per table) drawn from
    /// `pattern`, labels 0/1 at a 25% click rate. Files appear only when complete.
    public static func writeSynthetic(config: ModelConfig, rows: Int, pattern: AccessPattern, seed: UInt64,
                                      directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var generator = SyntheticGenerator(config: config, pattern: pattern, bagLength: .model, seed: seed,
                                           indexType: .int32)
        let batch = generator.nextBatch(size: rows)
        func path(_ name: String) -> String { (directory as NSString).appendingPathComponent("day_0_" + name) }
        var members: [(name: String, bytes: [UInt8])] = []
        for (t, feature) in batch.sparse.enumerated() {
            let hot = config.tables[t].multiHot ?? config.lookupsPerTable
            let values = feature.indices.asInts.map(Int32.init)
            members.append(("\(t).npy", values.withUnsafeBytes {
                NumPyArray.encode(type: .int32, shape: [rows, hot], data: $0)
            }))
        }
        try ZipDirectory.write(members, to: path("sparse_multi_hot.npz"))
        var rng = SeededGenerator(seed: seed, stream: 0x1ABE1)
        let labels = (0..<rows).map { _ in Int32(rng.nextUnitFloat() < 0.25 ? 1 : 0) }
        try Data(labels.withUnsafeBytes { NumPyArray.encode(type: .int32, shape: [rows, 1], data: $0) })
            .write(to: URL(fileURLWithPath: path("labels.npy")), options: .atomic)
        // The dense file last: its presence is what marks the directory as this layout.
        try Data(batch.dense.withUnsafeBytes { NumPyArray.encode(type: .float32, shape: [rows, config.denseFeatures], data: $0) })
            .write(to: URL(fileURLWithPath: path("dense.npy")), options: .atomic)
    }
}
