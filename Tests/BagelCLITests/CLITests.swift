import Core
import ArgumentParser
import BagelTestSupport
import DLRM
import Inputs
import Foundation
import Testing

@testable import BagelCLI

/// Parses and runs one `bagel` command line in-process.
func bagel(_ arguments: [String]) async throws {
    var command = try BagelCommand.parseAsRoot(arguments)
    if var asyncCommand = command as? AsyncParsableCommand {
        try await asyncCommand.run()
    } else {
        try command.run()
    }
}

func writeCriteo(_ path: String, rows: Int, seed: UInt64, labels: Bool = true) throws {
    var rng = SeededGenerator(seed: seed)
    var text = ""
    for _ in 0..<rows {
        let dense: [Int?] = (0..<13).map { _ in rng.nextIndex(below: 10) == 0 ? nil : rng.nextIndex(below: 2000) - 3 }
        let categorical: [UInt64?] = (0..<26).map { _ in rng.nextIndex(below: 10) == 0 ? nil : rng.next() >> 32 }
        text += CriteoTSVWriter.line(label: labels ? rng.nextIndex(below: 2) : nil, dense: dense, categorical: categorical) + "\n"
    }
    try text.write(toFile: path, atomically: true, encoding: .utf8)
}

@Suite(.serialized) struct CLITests {
    @Test func initInfoPredictEndToEnd() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let model = dir.file("model")
        try await bagel(["init", "--preset", "kaggle", "--max-rows", "2000", "--seed", "3", "--out", model])
        #expect(FileManager.default.fileExists(atPath: model + "/model.json"))
        try await bagel(["info", model])

        // A second init into the same directory needs --force.
        await #expect(throws: BagelError.self) {
            try await bagel(["init", "--preset", "kaggle", "--max-rows", "2000", "--out", model])
        }
        try await bagel(["init", "--preset", "kaggle", "--max-rows", "2000", "--seed", "3", "--out", model, "--force"])

        let data = dir.file("data.tsv")
        try writeCriteo(data, rows: 300, seed: 8)
        let out = dir.file("p.txt")
        try await bagel(["predict", "--model", model, "--data", data, "--out", out, "--batch-size", "64", "--device", "cpu"])
        let got = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").map { Double($0)! }
        #expect(got.count == 300)

        // The same probabilities from the per-sample reference on the same parsed input.
        let loaded = try Model.load(directory: model)
        let reader = try CriteoTSVReader(path: data, config: loaded.config)
        var want: [Double] = []
        while let batch = try reader.nextBatch(maxSize: 1000) {
            want += ReferenceForward.probabilities(model: loaded, batch: batch.batch)
        }
        #expect(zip(got, want).allSatisfy { abs($0 - $1) <= 1e-5 })

        // --math is the GPU's: the CPU engine (the fp32 reference) gives the same bytes whatever it says.
        let fp8Out = dir.file("p-fp8.txt")
        try await bagel(["predict", "--model", model, "--data", data, "--out", fp8Out, "--batch-size", "64", "--device", "cpu",
                         "--math", "fp8"])
        #expect(try String(contentsOfFile: fp8Out, encoding: .utf8) == String(contentsOfFile: out, encoding: .utf8))
        #expect(throws: (any Error).self) { try BagelCommand.parseAsRoot(["predict", "--model", model, "--data", data, "--math", "fp9"]) }
    }

    @Test func badInputWritesNothing() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let model = dir.file("model")
        try await bagel(["init", "--preset", "kaggle", "--max-rows", "100", "--out", model])
        let data = dir.file("bad.tsv")
        try writeCriteo(data, rows: 50, seed: 1)
        var text = try String(contentsOfFile: data, encoding: .utf8)
        text += "1\t2\t3\n"  // line 51: too few fields
        try text.write(toFile: data, atomically: true, encoding: .utf8)
        let out = dir.file("p.txt")
        do {
            try await bagel(["predict", "--model", model, "--data", data, "--out", out, "--batch-size", "16"])
            Issue.record("expected an error")
        } catch let error as BagelError {
            #expect(error.message.contains("bad.tsv:51:"))
        }
        #expect(!FileManager.default.fileExists(atPath: out))

        await #expect(throws: BagelError.self) {
            try await bagel(["predict", "--model", dir.file("nope"), "--data", data])
        }
    }

    @Test func boundsCheckModes() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let model = dir.file("model")
        try await bagel(["init", "--preset", "kaggle", "--max-rows", "100", "--out", model])
        let config = try ModelConfig.load(path: model + "/model.json")
        var lines: [String] = []
        for s in 0..<5 {
            var sparse = (0..<26).map { t in "[\(s % config.tables[t].rows)]" }
            if s == 3 { sparse[2] = "[1, 5000, 2]" }  // 5000 is past table 2's 100 rows
            lines.append("{\"dense\": [\((0..<13).map { _ in "0.5" }.joined(separator: ", "))], \"sparse\": [\(sparse.joined(separator: ", "))]}")
        }
        let data = dir.file("d.jsonl")
        try lines.joined(separator: "\n").write(toFile: data, atomically: true, encoding: .utf8)
        let out = dir.file("p.txt")
        do {
            try await bagel(["predict", "--model", model, "--data", data, "--format", "jsonl", "--out", out])
            Issue.record("expected an out-of-range error")
        } catch let error as BagelError {
            #expect(error.description.contains("d.jsonl:4:"))
            #expect(error.location.line == 4 && error.location.table == 2)
            #expect(error.message.contains("table 2"))
            #expect(error.message.contains("index 5000"))
        }
        #expect(!FileManager.default.fileExists(atPath: out))
        try await bagel(["predict", "--model", model, "--data", data, "--format", "jsonl", "--out", out, "--bounds-check", "skip"])
        #expect(try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").count == 5)
    }

    @Test func profileWritesHotRows() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try ([5, 5, 5, 2, 2, 9, 5, 1].map(String.init).joined(separator: "\n")).write(
            toFile: dir.file("t.txt"), atomically: true, encoding: .utf8)
        try await bagel(["profile", "--trace", dir.file("t.txt"), "--rows", "10", "--top", "2", "--out", dir.file("hot.txt")])
        #expect(try HotRowList.read(path: dir.file("hot.txt"), tableRows: 10).rows == [5, 2])
        await #expect(throws: BagelError.self) {
            try await bagel(["profile", "--trace", dir.file("t.txt"), "--rows", "5"])  // row 9 is outside 5 rows
        }

        let model = dir.file("model")
        try await bagel(["init", "--preset", "kaggle", "--max-rows", "500", "--out", model])
        try writeCriteo(dir.file("d.tsv"), rows: 200, seed: 3)
        try await bagel(["profile", "--data", dir.file("d.tsv"), "--model", model, "--top", "50", "--write"])
        let config = try ModelConfig.load(path: model + "/model.json")
        let files = try #require(config.embedding?.hotRows)
        #expect(files.count == 26)
        let list = try HotRowList.read(path: model + "/" + files[2], tableRows: config.tables[2].rows)
        #expect(!list.rows.isEmpty && list.rows.count <= 50)
        _ = try Model.load(directory: model)  // still a valid model
    }

    @Test func variantListsKeepKnobsTogether() {
        #expect(EmbeddingBench.variantList("all,bagel:unroll=16,split=2,rpf:dist=8,baseline")
                == ["all", "bagel:unroll=16,split=2", "rpf:dist=8", "baseline"])
        #expect(EmbeddingBench.variantList("vectorized") == ["vectorized"])
        #expect(EmbeddingBench.variantList("vectorized:lanes=8,dedup,vectorized,dedup") == ["vectorized:lanes=8,dedup", "vectorized:dedup"])
    }

    /// The host's share of a GPU batch, timed without a GPU: valid synthetic batches must pass the pack's checks,
    /// on one thread and in pieces on all cores (64 paper samples: 115K lookups, over the all-cores threshold).
    @Test func benchHostPacksWithoutAGPU() async throws {
        try await bagel(["bench", "host", "--preset", "paper", "--batch-size", "64", "--iterations", "2"])
        await #expect(throws: (any Error).self) { try await bagel(["bench", "host", "--iterations", "0"]) }
    }

    @Test func benchRunsOnASmallModel() async throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try await bagel(["bench", "--preset", "kaggle", "--max-rows", "1000", "--batch-size", "64", "--seconds", "0.2",
                         "--device", "cpu", "--dtype", "int8", "--json", dir.file("bench.json")])
        // The int8 tables' error against the fp32 rows they were drawn from is reported.
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.file("bench.json")))) as? [String: Any]
        let reference = try #require(json?["reference"] as? [String: Any])
        #expect(reference["samples"] as? Int == 64)
        let worst = try #require(reference["max_abs_dp"] as? Double)
        #expect(worst > 0 && worst < 0.05)
    }
}
