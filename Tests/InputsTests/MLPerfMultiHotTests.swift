import BagelTestSupport
import Core
import DLRM
import Foundation
import Testing

@testable import Inputs

/// MLPerf DLRM-v2's multi-hot files: NumPy arrays and uncompressed zips, read in place.
@Suite struct MLPerfMultiHotTests {
    let config = ModelPreset.mlperfV2.config(maxRows: 300)

    @Test func syntheticFilesReadBackAsTheyWereWritten() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try MLPerfMultiHotReader.writeSynthetic(config: config, rows: 70, pattern: .zipf(exponent: 1.1), seed: 4,
                                                directory: dir.path)
        #expect(MLPerfMultiHotReader.recognises(dir.path))
        #expect(DataFormat.detect(path: dir.path, asked: .criteo) == .mlperf)
        var generator = SyntheticGenerator(config: config, pattern: .zipf(exponent: 1.1), bagLength: .model, seed: 4,
                                           indexType: .int32)
        let expected = generator.nextBatch(size: 70)
        let reader = try MLPerfMultiHotReader(directory: dir.path, config: config)
        #expect(reader.rows == 70)
        var samples = 0
        while let next = try reader.nextBatch(maxSize: 32) {
            let batch = next.batch
            try batch.validate(for: config)
            for s in 0..<batch.size {
                let row = samples + s
                #expect(Array(batch.dense[(s * 13)..<((s + 1) * 13)]) == Array(expected.dense[(row * 13)..<((row + 1) * 13)]))
                for t in 0..<26 {
                    #expect(Array(batch.sparse[t].bag(s)).map { batch.sparse[t].indices[$0] }
                        == Array(expected.sparse[t].bag(row)).map { expected.sparse[t].indices[$0] })
                }
            }
            #expect(next.labels?.count == batch.size && next.lineNumbers.first == samples + 1)
            samples += batch.size
        }
        #expect(samples == 70)
        #expect(expected.sparse[20].bag(0).count == 100)
    }

    @Test func npyHeadersOfEveryVersionAndBadFilesSayWhatIsWrong() throws {
        let values: [Float] = [1, 2, 3, 4, 5, 6]
        var bytes = values.withUnsafeBytes { NumPyArray.encode(type: .float32, shape: [2, 3], data: $0) }
        #expect((bytes.count - values.count * 4) % 64 == 0)
        try bytes.withUnsafeBytes { raw in
            let array = try NumPyArray(raw, where: "x.npy")
            #expect(array.shape == [2, 3] && array.type == .float32)
            #expect(Array(array.data.bindMemory(to: Float.self)) == values)
        }
        func expectError(_ fragment: String, _ data: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
            data.withUnsafeBytes { raw in
                do {
                    _ = try NumPyArray(raw, where: "bad.npy")
                    Issue.record("accepted", sourceLocation: sourceLocation)
                } catch let error as BagelError {
                    #expect(error.message.contains("bad.npy") && error.message.contains(fragment), "\(error.message)",
                            sourceLocation: sourceLocation)
                } catch {
                    Issue.record("\(error)", sourceLocation: sourceLocation)
                }
            }
        }
        expectError("magic", Array("not numpy".utf8))
        expectError("truncated", Array(bytes.dropLast(4)))
        let header = String(decoding: bytes[10..<(bytes.count - 24)], as: UTF8.self)
        func with(_ replaced: String, by text: String) -> [UInt8] {
            Array(bytes[0..<10]) + Array(header.replacingOccurrences(of: replaced, with: text).utf8) + Array(bytes[(bytes.count - 24)...])
        }
        expectError("element type", with("'<f4'", by: "'>f4'"))
        expectError("Fortran", with("False", by: "True "))
        bytes[6] = 9
        expectError("version 9", bytes)
    }

    @Test func zipArchivesRoundTripAndCompressedMembersAreRefused() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        let members: [(name: String, bytes: [UInt8])] = [("0.npy", Array(repeating: 7, count: 100)), ("b", [1, 2, 3])]
        try ZipDirectory.write(members, to: dir.file("a.zip"))
        let archive = try MappedFile(path: dir.file("a.zip"), what: "test")
        try withExtendedLifetime(archive) {  // the members point into the mapping
            let read = try ZipDirectory.storedMembers(archive.bytes, path: "a.zip")
            #expect(read.count == 2 && Array(read["b"]!) == [1, 2, 3] && Array(read["0.npy"]!) == members[0].bytes)
        }
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)  // the standard check value
        // The same archive with member b marked deflated (method 8) in its central record.
        var bytes = Array(archive.bytes)
        let central = bytes.count - 22 - (46 + 1)  // the last central record: member "b"
        bytes[central + 10] = 8
        bytes.withUnsafeBytes { raw in
            do {
                _ = try ZipDirectory.storedMembers(raw, path: "c.npz")
                Issue.record("a compressed member was accepted")
            } catch let error as BagelError {
                #expect(error.message.contains("compressed") && error.message.contains("np.savez"))
            } catch {
                Issue.record("\(error)")
            }
        }
    }

    @Test func truncatedOrCorruptArchivesAreErrorsNotCrashes() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        try ZipDirectory.write([("0.npy", Array(repeating: 1, count: 4000)), ("1.npy", [1, 2, 3])], to: dir.file("a.zip"))
        let mapped = try MappedFile(path: dir.file("a.zip"), what: "test")
        let whole = withExtendedLifetime(mapped) { Array(mapped.bytes) }
        var corrupt = whole
        let end = whole.count - 22
        corrupt[end + 16] = 0xFF  // the directory's offset now points past the end
        corrupt[end + 19] = 0x7F
        for (name, bytes) in [("cut", Array(whole.prefix(whole.count / 2))), ("offset", corrupt), ("empty", [])] {
            bytes.withUnsafeBytes { raw in
                #expect(throws: BagelError.self, "\(name)") { _ = try ZipDirectory.storedMembers(raw, path: name) }
                return ()
            }
        }
    }

    @Test func aDirectoryThatIsNotTheLayoutSaysWhatItNeeds() throws {
        let dir = TemporaryDirectory()
        defer { dir.cleanup() }
        #expect(!MLPerfMultiHotReader.recognises(dir.path))
        do {
            _ = try MLPerfMultiHotReader(directory: dir.path, config: config)
            Issue.record("an empty directory was read")
        } catch let error as BagelError {
            #expect(error.message.contains("day_<D>_dense.npy"))
        }
    }
}
