import ArgumentParser
import Core
import DLRM
import Foundation
import Serving
import Testing

@testable import BagelCLI

/// What the command line accepts, as documented.
@Suite struct CommandLineTests {
    @Test func grpcPortMinusOneDisablesGRPCAsDocumented() throws {
        let spaced = try BagelCommand.parseAsRoot(["serve", "--model", "m", "--grpc-port", "-1"])
        #expect((spaced as? ServeCommand)?.grpcPort == -1)
        let joined = try BagelCommand.parseAsRoot(["serve", "--model", "m", "--grpc-port=-1"])
        #expect((joined as? ServeCommand)?.grpcPort == -1)
    }

    /// `serve` warms up by default; the warm-up runs one valid batch of each size given, in order.
    @Test func serveWarmsUpEveryBucketSize() throws {
        #expect((try BagelCommand.parseAsRoot(["serve", "--model", "m"]) as? ServeCommand)?.warmUp == true)
        #expect((try BagelCommand.parseAsRoot(["serve", "--model", "m", "--no-warm-up"]) as? ServeCommand)?.warmUp == false)
        let config = ModelConfig(
            name: "tiny", denseFeatures: 3, bottomMLP: [4],
            tables: [TableConfig(rows: 50, dim: 4), TableConfig(rows: 30, dim: 4, multiHot: 3)], topMLP: [5, 1],
            lookupsPerTable: 2)
        let engine = RecordingEngine(CPUEngine(model: try Model.random(config: config, seed: 7)))
        let sizes = BatchingOptions(maxBatch: 100, bucketed: true).bucketSizes
        #expect(sizes == [1, 2, 4, 8, 16, 32, 64, 128])
        let seconds = try ServeCommand.warmUp(engine, sizes: sizes)
        #expect(seconds >= 0 && engine.sizes == sizes)
    }

    @Test func versionNamesTheReleaseAndTheBuild() {
        let version = BagelCommand.configuration.version
        #expect(version.hasPrefix("bagel \(BagelVersion.number) ("))
        #expect(version.contains("development build") || version.contains("revision"))
    }

    @Test func loadgenTakesAModelNameAndInferAModelDirectory() throws {
        let loadgen = try BagelCommand.parseAsRoot(["loadgen", "--name", "kaggle"])
        #expect((loadgen as? LoadgenCommand)?.name == "kaggle")
        #expect(throws: (any Error).self) { try BagelCommand.parseAsRoot(["loadgen", "--model", "kaggle"]) }
        let infer = try BagelCommand.parseAsRoot(["infer", "--model", "dir", "--data", "day.tsv"])
        #expect((infer as? InferCommand)?.model == "dir")
    }
}

/// The CPU engine, recording the size of every batch it is given (each validated as the engines validate).
final class RecordingEngine: InferenceEngine, @unchecked Sendable {
    let inner: CPUEngine
    private let lock = NSLock()
    private var recorded: [Int] = []
    init(_ inner: CPUEngine) { self.inner = inner }
    var model: Model { inner.model }
    var description: String { "recording " + inner.description }
    var sizes: [Int] { lock.withLock { recorded } }
    func predict(_ batch: Batch) throws -> [Float] {
        try batch.validate(for: model.config)
        lock.withLock { recorded.append(batch.size) }
        return try inner.predict(batch)
    }
}
