import ArgumentParser
import CUDA
import DLRM
import Engine
import Foundation
import Kernels

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Describe a model: architecture, parameters, memory per table.")

    @Argument(help: "Model directory.")
    var model: String

    @Flag(help: "Also print the embedding plan: each table's kernel, precision, placement and hot rows kept in L2.")
    var plan = false

    @Option(help: "Embedding variant to plan for (auto, tune or a variant spec; default: the model's choice).")
    var variant: String?

    func run() throws {
        let loaded = try Model.load(directory: model)
        print(Self.describe(loaded))
        if plan {
            // The planner needs the GPU's L2 only; without a GPU, plan for an assumed one and say so.
            let device: DeviceLimits
            if case .success(let context) = CUDAContext.probe() { device = context.device.limits } else { device = .assumedH100 }
            let choice = try variant.map(EmbeddingChoice.parse) ?? .auto
            let hot = try GPUEngine.loadHotRows(model: loaded)
            let cached = EmbeddingAutotuner.load(
                key: EmbeddingAutotuner.engineKey(gpu: device.name, config: loaded.config, hotRows: hot))
            print("")
            print(try EmbeddingPlanner.plan(config: loaded.config, choice: choice, hotRows: hot, device: device,
                                            cached: cached.flatMap { try? $0.configs() }))
        }
    }

    static func describe(_ model: Model) -> String {
        let c = model.config
        var lines: [String] = []
        lines.append("model \(c.name) (\(c.format) v\(c.version))")
        lines.append("dense features   \(c.denseFeatures)")
        lines.append("bottom MLP       " + ([c.denseFeatures] + c.bottomMLP).map(String.init).joined(separator: " → ") + "  (ReLU)")
        switch c.interaction {
        case .dot:
            let n = c.tables.count
            lines.append("interaction      dot: \(n + 1) vectors of \(c.bottomOutputWidth), \(n * (n + 1) / 2) pairs, "
                         + (c.pairOrder == .lower ? "lower triangle (facebookresearch/dlrm)" : "upper triangle (TorchRec)"))
        case .cat:
            lines.append("interaction      cat: x and \(c.tables.count) embeddings concatenated")
        case .dcn:
            let cross = c.crossNetwork!
            lines.append("interaction      dcn: x₀ = x and \(c.tables.count) embeddings (\(c.crossWidth) wide), "
                         + "\(cross.layers) low-rank cross layers of rank \(cross.lowRank)")
        }
        lines.append("top MLP          " + ([c.topInputWidth] + c.topMLP).map(String.init).joined(separator: " → ") + "  (ReLU, sigmoid last)")
        if c.tables.contains(where: { $0.multiHot != nil }) {
            let sizes = c.tables.map { $0.multiHot ?? c.lookupsPerTable }
            lines.append("lookups/table    multi-hot " + sizes.map(String.init).joined(separator: ",")
                         + " (\(sizes.reduce(0, +)) per sample)")
        } else {
            lines.append("lookups/table    \(c.lookupsPerTable) (typical, for benchmarks)")
        }
        if let naming = model.weightNaming {
            lines.append("weights          " + (naming == .torchrec ? "TorchRec tensor names" : "facebookresearch/dlrm tensor names")
                         + (c.weightNames == nil ? " (found from the file)" : ""))
        }
        if let variant = c.embedding?.variant { lines.append("embedding kernel \(variant)") }
        let totalRows = c.tables.reduce(0) { $0 + $1.rows }
        let tableBytes = c.tables.reduce(0) { $0 + $1.byteCount }
        lines.append("tables           \(c.tables.count), \(Console.count(totalRows)) rows, \(Console.bytes(tableBytes))")
        lines.append("")
        lines.append("   #         rows   dim  pooling  dtype        bytes")
        for (t, table) in c.tables.enumerated() {
            lines.append(
                pad(t, 4) + " " + pad(table.rows, 12) + " " + pad(table.dim, 5) + "  "
                    + table.pooling.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0) + "  "
                    + table.dtype.rawValue.padding(toLength: 5, withPad: " ", startingAt: 0) + " "
                    + pad(Console.bytes(table.byteCount), 12))
        }
        lines.append("")
        let mlpBytes = (model.bottom + model.top + model.cross.flatMap { [$0.v, $0.w] })
            .reduce(0) { $0 + ($1.weight.count + $1.bias.count) * 4 }
        lines.append("parameters       \(c.parameterCount) (\(Console.count(c.parameterCount)))")
        lines.append("memory           \(Console.bytes(tableBytes)) embeddings + \(Console.bytes(mlpBytes)) MLPs = \(Console.bytes(tableBytes + mlpBytes))")
        return lines.joined(separator: "\n")
    }
}
