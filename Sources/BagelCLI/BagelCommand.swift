import ArgumentParser
import Core
import DLRM

/// `bagel`: the command line. Each subcommand is thin: it parses, calls the libraries, prints.
@available(macOS 10.15, macCatalyst 13, iOS 13, tvOS 13, watchOS 6, *)
public struct BagelCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bagel",
        abstract: "DLRM inference: a CPU reference engine, GPU kernels, benchmarks and a server.",
        version: "bagel \(BagelVersion.description)",
        subcommands: [
            InitCommand.self, InfoCommand.self, PredictCommand.self, BenchCommand.self, DoctorCommand.self,
            ProfileCommand.self, PlanCommand.self, ServeCommand.self, LoadgenCommand.self, InferCommand.self,
            GenerateCommand.self,
        ]
    )

    public init() {}
}

extension PoolingMode: ExpressibleByArgument {}
extension StorageType: ExpressibleByArgument {}
extension DeviceChoice: ExpressibleByArgument {}
extension ModelPreset: ExpressibleByArgument {}
extension IndexType: ExpressibleByArgument {}

/// What to do with a lookup outside its table.
enum BoundsCheck: String, ExpressibleByArgument, CaseIterable {
    /// Stop with an error naming table, sample, position and value.
    case error
    /// Drop the lookup and count it.
    case skip
}

@available(macOS 10.15, macCatalyst 13, iOS 13, tvOS 13, watchOS 6, *)
extension BagelCommand {
    /// Parses the command line and runs the chosen command, async or not. (Written out because a
    /// plain `BagelCommand.main()` from another module resolves to the synchronous overload.)
    public static func runAsync(_ arguments: [String]? = nil) async {
        do {
            var command = try await asyncParseAsRoot(arguments)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
