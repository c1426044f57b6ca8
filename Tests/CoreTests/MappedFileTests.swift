import Foundation
import Testing

@testable import Core

@Suite struct MappedFileTests {
    /// `read` gives the bytes the mapping shows, for regions at any offset and length (odd ones included), the
    /// file's last byte too, and leaves the destination alone for an empty region.
    @Test func readCopiesWhatTheMappingShows() throws {
        let path = NSTemporaryDirectory() + "bagel-mapped-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let contents = (0..<300_001).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
        try Data(contents).write(to: URL(fileURLWithPath: path))
        let file = try MappedFile(path: path, what: "a test file")
        #expect(file.bytes.count == contents.count)
        for (start, count) in [(0, 1), (3, 65_537), (131_071, 100_000), (contents.count - 7, 7), (0, contents.count)] {
            var out = [UInt8](repeating: 0xAB, count: count + 2)
            out.withUnsafeMutableBytes { destination in
                let region = UnsafeRawBufferPointer(rebasing: file.bytes[start..<(start + count)])
                file.read(region, into: destination.baseAddress! + 1)
            }
            #expect(out.first == 0xAB && out.last == 0xAB, "wrote outside the destination at \(start)")
            #expect(Array(out[1...count]) == Array(contents[start..<(start + count)]), "region \(start)+\(count)")
        }
        var untouched: [UInt8] = [0xCD]
        untouched.withUnsafeMutableBytes {
            file.read(UnsafeRawBufferPointer(rebasing: file.bytes[5..<5]), into: $0.baseAddress!)
        }
        #expect(untouched == [0xCD])
    }

    @Test func aMissingFileSaysWhichAndWhat() {
        #expect(throws: BagelError.self) { try MappedFile(path: "/nonexistent/bagel-file", what: "the dense features") }
        do {
            _ = try MappedFile(path: "/nonexistent/bagel-file", what: "the dense features")
        } catch let error as BagelError {
            #expect(error.message.contains("/nonexistent/bagel-file") && error.message.contains("the dense features"))
        } catch {}
    }
}
