import Core
import Dispatch
import Foundation

/// Draws a model's random weights reproducibly and in parallel: each tensor is cut into fixed
/// chunks, each chunk drawn from its own stream of the seed, so the numbers do not depend on the
/// order or the number of threads that fill them.
///
/// Embedding rows are uniform in ±sqrt(1/rows); Linear weights normal with std sqrt(2/(in+out));
/// biases normal with std sqrt(1/out) (facebookresearch/dlrm's initialisation).
public enum WeightInitializer {
    public enum Role: Sendable, Equatable {
        case embedding(table: Int)
        case weight(top: Bool, layer: Int, input: Int, output: Int)
        case bias(top: Bool, layer: Int, input: Int, output: Int)
        /// Cross-network layer `layer`: V [rank × width], W [width × rank] (normal, Linear weights'
        /// std), bias [width] (normal, std sqrt(1/width); TorchRec starts it at zero, which would
        /// leave it untested).
        case cross(layer: Int, part: CrossPart, width: Int, rank: Int)
    }

    public enum CrossPart: Sendable, Equatable { case v, w, bias }

    public struct Entry: Sendable {
        public let name: String
        public let shape: [Int]
        public let role: Role
        public var elementCount: Int { shape.reduce(1, *) }
    }

    static let chunkElements = 1 << 16

    /// Every tensor of the model, in file order: tables, bottom layers, cross layers, top layers. Names
    /// follow the model's naming (facebookresearch/dlrm's unless model.json says torchrec).
    public static func entries(for config: ModelConfig) -> [Entry] {
        let names = WeightNames(config.weightNames ?? .dlrm, config: config)
        var entries: [Entry] = []
        for (t, table) in config.tables.enumerated() {
            entries.append(Entry(name: names.embedding(t), shape: [table.rows, table.dim], role: .embedding(table: t)))
        }
        func mlp(top: Bool, input: Int, widths: [Int]) {
            for (k, shape) in ModelConfig.layerShapes(input: input, widths: widths).enumerated() {
                let name = top ? names.top(k) : names.bottom(k)
                entries.append(
                    Entry(name: name.weight, shape: [shape.output, shape.input],
                          role: .weight(top: top, layer: k, input: shape.input, output: shape.output)))
                entries.append(
                    Entry(name: name.bias, shape: [shape.output],
                          role: .bias(top: top, layer: k, input: shape.input, output: shape.output)))
            }
        }
        mlp(top: false, input: config.denseFeatures, widths: config.bottomMLP)
        if config.interaction == .dcn, let shape = config.crossNetwork {
            let (width, rank) = (config.crossWidth, shape.lowRank)
            for l in 0..<shape.layers {
                let name = names.cross(l)
                entries.append(Entry(name: name.v, shape: [rank, width], role: .cross(layer: l, part: .v, width: width, rank: rank)))
                entries.append(Entry(name: name.w, shape: [width, rank], role: .cross(layer: l, part: .w, width: width, rank: rank)))
                entries.append(Entry(name: name.bias, shape: [width],
                                     role: .cross(layer: l, part: .bias, width: width, rank: rank)))
            }
        }
        mlp(top: true, input: config.topInputWidth, widths: config.topMLP)
        return entries
    }

    /// Fills chunk `chunk` of the tensor (`chunkElements` elements, fewer for the last).
    static func fillChunk(_ entry: Entry, index: Int, seed: UInt64, chunk: Int, into out: UnsafeMutableBufferPointer<Float>) {
        var rng = SeededGenerator(seed: seed, stream: UInt64(index), substream: UInt64(chunk))
        switch entry.role {
        case .embedding:
            let bound = Float((1.0 / Double(entry.shape[0])).squareRoot())
            for i in 0..<out.count { out[i] = (2 * rng.nextUnitFloat() - 1) * bound }
        case .weight(_, _, let input, let output):
            let std = (2.0 / Double(input + output)).squareRoot()
            for i in 0..<out.count { out[i] = Float(rng.nextGaussian() * std) }
        case .bias(_, _, _, let output), .cross(_, .bias, let output, _):
            let std = (1.0 / Double(output)).squareRoot()
            for i in 0..<out.count { out[i] = Float(rng.nextGaussian() * std) }
        case .cross(_, _, let width, let rank):
            let std = (2.0 / Double(width + rank)).squareRoot()
            for i in 0..<out.count { out[i] = Float(rng.nextGaussian() * std) }
        }
    }

    /// Elements `range` of the tensor (chunk-aligned start) converted to `dtype`, written to `out`.
    static func fill(_ entry: Entry, index: Int, seed: UInt64, elements range: Range<Int>, dtype: StorageType,
                     into out: UnsafeMutableRawBufferPointer) {
        precondition(range.lowerBound % chunkElements == 0)
        let firstChunk = range.lowerBound / chunkElements
        let chunkCount = (range.count + chunkElements - 1) / chunkElements
        let shared = SendableRawBuffer(out)
        DispatchQueue.concurrentPerform(iterations: chunkCount) { c in
            let start = range.lowerBound + c * chunkElements
            let count = min(chunkElements, range.upperBound - start)
            var scratch = [Float](repeating: 0, count: count)
            scratch.withUnsafeMutableBufferPointer { buffer in
                fillChunk(entry, index: index, seed: seed, chunk: firstChunk + c, into: buffer)
                let destination = UnsafeMutableRawBufferPointer(
                    rebasing: shared.buffer[((start - range.lowerBound) * dtype.byteWidth)...])
                NumericConversion.convert(
                    source: UnsafeRawBufferPointer(buffer), sourceType: .F32, count: count, destination: destination,
                    destinationType: dtype)
            }
        }
    }

    /// The whole tensor in `dtype`, into `out` (which holds rows × dtype.rowBytes bytes).
    public static func generate(_ entry: Entry, index: Int, seed: UInt64, dtype: StorageType,
                                into out: UnsafeMutableRawBufferPointer) {
        guard dtype.isRowwiseQuantized else {
            return fill(entry, index: index, seed: seed, elements: 0..<entry.elementCount, dtype: dtype, into: out)
        }
        let (rows, dim) = (entry.shape[0], entry.shape[1])
        let block = quantizedBlockRows(dim: dim)
        let bytes = dtype.rowBytes(dim: dim)
        for start in stride(from: 0, to: rows, by: block) {
            let end = min(rows, start + block)
            fillQuantized(entry, index: index, seed: seed, rows: start..<end, dtype: dtype,
                     into: UnsafeMutableRawBufferPointer(rebasing: out[(start * bytes)..<(end * bytes)]))
        }
    }

    /// Rows of a table per block when drawing it quantised (int8, int4): whole rows whose first element starts a
    /// chunk (so the numbers are those of the fp32 table), about 4M elements.
    static func quantizedBlockRows(dim: Int) -> Int {
        func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
        let unit = chunkElements / gcd(dim, chunkElements)  // rows whose elements fill whole chunks
        return unit * max(1, (chunkElements * 64 / dim) / unit)
    }

    /// Rows `rows` of an embedding tensor drawn as fp32 (the same numbers as an fp32 table) and
    /// quantised row by row to `dtype` (`RowwiseQuantized`) into `out`.
    static func fillQuantized(_ entry: Entry, index: Int, seed: UInt64, rows: Range<Int>, dtype: StorageType,
                              into out: UnsafeMutableRawBufferPointer) {
        let dim = entry.shape[1]
        var floats = [Float](repeating: 0, count: rows.count * dim)
        floats.withUnsafeMutableBytes { bytes in
            fill(entry, index: index, seed: seed, elements: (rows.lowerBound * dim)..<(rows.upperBound * dim), dtype: .fp32,
                 into: bytes)
        }
        floats.withUnsafeBytes { bytes in
            // Drawn values are finite and small: there is no bad row to report.
            _ = RowwiseQuantized.quantizeRows(to: dtype, source: bytes, sourceType: .F32, rows: rows.count, dim: dim,
                                              destination: out)
        }
    }

    /// Rows `rows` of table `t` of a model drawn from `seed`, as the fp32 numbers they were drawn as
    /// (before any conversion or quantisation to the table's dtype), row after row.
    public static func fp32Rows(config: ModelConfig, seed: UInt64, table t: Int, rows: [Int]) -> [Float] {
        let entries = entries(for: config)
        guard let index = entries.firstIndex(where: { $0.role == .embedding(table: t) }) else { return [] }
        let entry = entries[index]
        let dim = config.tables[t].dim
        // Each chunk the rows touch is drawn once, and copies its part of every row it holds.
        var pieces: [Int: [(output: Int, elements: Range<Int>)]] = [:]
        for (i, r) in rows.enumerated() {
            var start = r * dim
            while start < (r + 1) * dim {
                let chunk = start / chunkElements
                let end = min((r + 1) * dim, (chunk + 1) * chunkElements)
                pieces[chunk, default: []].append((i * dim + start - r * dim, start..<end))
                start = end
            }
        }
        var values = [Float](repeating: 0, count: rows.count * dim)
        let chunks = Array(pieces.keys)
        let work = chunks.map { pieces[$0]! }
        values.withUnsafeMutableBufferPointer { out in
            let shared = SendableRawBuffer(UnsafeMutableRawBufferPointer(out))
            DispatchQueue.concurrentPerform(iterations: chunks.count) { k in
                var scratch = [Float](repeating: 0, count: min(chunkElements, entry.elementCount - chunks[k] * chunkElements))
                scratch.withUnsafeMutableBufferPointer { buffer in
                    fillChunk(entry, index: index, seed: seed, chunk: chunks[k], into: buffer)
                    let destination = shared.buffer.baseAddress!.assumingMemoryBound(to: Float.self)
                    for piece in work[k] {  // rows are disjoint: no two chunks write one float
                        for (j, e) in piece.elements.enumerated() {
                            destination[piece.output + j] = buffer[e - chunks[k] * chunkElements]
                        }
                    }
                }
            }
        }
        return values
    }

    /// The whole tensor as Float.
    public static func floats(_ entry: Entry, index: Int, seed: UInt64) -> [Float] {
        var result = [Float](repeating: 0, count: entry.elementCount)
        result.withUnsafeMutableBytes { generate(entry, index: index, seed: seed, dtype: .fp32, into: $0) }
        return result
    }
}

/// Writes a model directory (model.json + weights.safetensors) with random weights, streaming,
/// so a multi-gigabyte model never sits whole in memory. Files appear only when complete.
public enum ModelWriter {
    /// - Parameter progress: called with (bytes written, total bytes) after each block.
    public static func writeRandom(config: ModelConfig, seed: UInt64, directory: String,
                                   progress: (Int, Int) -> Void = { _, _ in }) throws {
        try config.validate()
        try createDirectory(directory)
        let entries = WeightInitializer.entries(for: config)
        func dtype(of entry: WeightInitializer.Entry) -> StorageType {
            if case .embedding(let t) = entry.role { return config.tables[t].dtype }
            return .fp32
        }
        let fileEntries = entries.map { entry in
            let type = dtype(of: entry)
            // Quantised tables are written as FBGEMM's fused rows: U8, [rows, rowBytes].
            let shape = type.isRowwiseQuantized ? [entry.shape[0], type.rowBytes(dim: entry.shape[1])] : entry.shape
            return SafeTensorsWriter.Entry(name: entry.name, dtype: SafeTensorsDType(type), shape: shape)
        }
        let total = fileEntries.reduce(0) { $0 + $1.byteCount }
        let weightsPath = (directory as NSString).appendingPathComponent(Model.weightsFileName)
        let writer = try SafeTensorsWriter(
            path: weightsPath, entries: fileEntries, metadata: ["format": "pt", "generator": "bagel init", "seed": "\(seed)"])
        let blockElements = WeightInitializer.chunkElements * 64  // 4M elements: ~16 MB of fp32 a block
        var written = 0
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: blockElements * 4, alignment: 64)
        defer { block.deallocate() }
        for (index, entry) in entries.enumerated() {
            let type = dtype(of: entry)
            if type.isRowwiseQuantized {
                let (rows, dim) = (entry.shape[0], entry.shape[1])
                let rowBytes = type.rowBytes(dim: dim)
                let blockRows = WeightInitializer.quantizedBlockRows(dim: dim)
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: min(rows, blockRows) * rowBytes, alignment: 64)
                defer { buffer.deallocate() }
                for start in stride(from: 0, to: rows, by: blockRows) {
                    let end = min(rows, start + blockRows)
                    let bytes = (end - start) * rowBytes
                    WeightInitializer.fillQuantized(entry, index: index, seed: seed, rows: start..<end, dtype: type,
                                               into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<bytes]))
                    try writer.write(UnsafeRawBufferPointer(rebasing: buffer[0..<bytes]))
                    written += bytes
                    progress(written, total)
                }
                continue
            }
            var start = 0
            while start < entry.elementCount {
                let end = min(entry.elementCount, start + blockElements)
                let bytes = (end - start) * type.byteWidth
                WeightInitializer.fill(entry, index: index, seed: seed, elements: start..<end, dtype: type,
                                       into: UnsafeMutableRawBufferPointer(rebasing: block[0..<bytes]))
                try writer.write(UnsafeRawBufferPointer(rebasing: block[0..<bytes]))
                written += bytes
                progress(written, total)
                start = end
            }
        }
        try writer.finish()
        try writeConfig(config, directory: directory)
    }

    /// Writes model.json atomically.
    public static func writeConfig(_ config: ModelConfig, directory: String) throws {
        try createDirectory(directory)
        let path = (directory as NSString).appendingPathComponent(Model.configFileName)
        do {
            try config.encoded().write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw BagelError(.io, "\(path): cannot write (\(error.localizedDescription))")
        }
    }

    static func createDirectory(_ directory: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw BagelError(.io, "\(directory): cannot create the directory (\(error.localizedDescription))")
        }
    }
}
