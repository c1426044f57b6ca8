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
    }

    public struct Entry: Sendable {
        public let name: String
        public let shape: [Int]
        public let role: Role
        public var elementCount: Int { shape.reduce(1, *) }
    }

    static let chunkElements = 1 << 16

    /// Every tensor of the model, in file order: tables, then bottom layers, then top layers.
    public static func entries(for config: ModelConfig) -> [Entry] {
        var entries: [Entry] = []
        for (t, table) in config.tables.enumerated() {
            entries.append(Entry(name: WeightNames.embedding(t), shape: [table.rows, table.dim], role: .embedding(table: t)))
        }
        for (isTop, prefix, input, widths) in [
            (false, "bot_l", config.denseFeatures, config.bottomMLP), (true, "top_l", config.topInputWidth, config.topMLP),
        ] {
            for (k, shape) in ModelConfig.layerShapes(input: input, widths: widths).enumerated() {
                entries.append(
                    Entry(name: WeightNames.weight(prefix, k), shape: [shape.output, shape.input],
                          role: .weight(top: isTop, layer: k, input: shape.input, output: shape.output)))
                entries.append(
                    Entry(name: WeightNames.bias(prefix, k), shape: [shape.output],
                          role: .bias(top: isTop, layer: k, input: shape.input, output: shape.output)))
            }
        }
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
        case .bias(_, _, _, let output):
            let std = (1.0 / Double(output)).squareRoot()
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

    /// The whole tensor in `dtype`, into `out` (which holds elementCount × byteWidth bytes).
    public static func generate(_ entry: Entry, index: Int, seed: UInt64, dtype: StorageType,
                                into out: UnsafeMutableRawBufferPointer) {
        fill(entry, index: index, seed: seed, elements: 0..<entry.elementCount, dtype: dtype, into: out)
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
        let fileEntries = entries.map {
            SafeTensorsWriter.Entry(name: $0.name, dtype: SafeTensorsDType(dtype(of: $0)), shape: $0.shape)
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
