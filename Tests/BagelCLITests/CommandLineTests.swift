import ArgumentParser
import Core
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
