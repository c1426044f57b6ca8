import Core
import BagelTestSupport
import DLRM
import Foundation
import Testing

@testable import Serving

/// The request parser against Foundation's JSONSerialization and the standard library's number
/// parser, on fresh seeded documents; and the documents it must refuse, each with a position.
@Suite struct JSONValueTests {
    func parse(_ text: String) throws -> JSONValue { try JSONValue.parse(ArraySlice(Array(text.utf8))) }

    @Test func numbersReadAsTheStandardLibraryReadsThem() throws {
        var rng = SeededGenerator(seed: 99)
        var texts: [String] = ["0", "-0", "1", "-1", "0.5", "1e2", "1E-2", "-2.5e+3", "9007199254740993",
                               "9223372036854775807", "-9223372036854775808", "18446744073709551616",
                               "0.1", "0.30000000000000004", "123456789012345678901234567890", "1e-400",
                               "2.2250738585072014e-308", "4.9e-324", "1.7976931348623157e308", "0.000001234",
                               "100000000000000000000000.5", "3.14159265358979323846264338327950288"]
        for _ in 0..<20_000 {
            let bits = rng.next()
            let d = Double(bitPattern: bits)
            if d.isFinite { texts.append(d.description) }
            let f = Float(bitPattern: UInt32(truncatingIfNeeded: bits >> 7))
            if f.isFinite { texts.append(Double(f).description) }
            texts.append(String(Int64(bitPattern: rng.next()) >> Int64(rng.nextIndex(below: 64))))
            texts.append(String(format: "%.\(rng.nextIndex(below: 20))e", Double(rng.nextUnitFloat()) * 1000 - 500))
            texts.append(String(format: "%.\(rng.nextIndex(below: 12))f", Double(rng.nextUnitFloat()) * 2 - 1))
        }
        for text in texts {
            guard case .number(let n) = try parse(text) else {
                Issue.record("\(text): not a number")
                continue
            }
            let expected = Double(text)!
            #expect(n.double.bitPattern == expected.bitPattern, "\(text): \(n.double) vs \(expected)")
            let isIntegerLiteral = !text.contains(where: { ".eE".contains($0) })
            #expect(n.integer == (isIntegerLiteral ? Int64(text) : nil),
                    "\(text): integer \(String(describing: n.integer))")
        }
    }

    /// A random document of every JSON type, as JSONSerialization would write it.
    func document(_ rng: inout SeededGenerator, depth: Int = 0) -> Any {
        switch rng.nextIndex(below: depth > 3 ? 4 : 6) {
        case 0: return Double(rng.nextUnitFloat()) * 2000 - 1000
        case 1: return Int(Int32(truncatingIfNeeded: rng.next()))
        case 2:
            let alphabet = Array("abc xyz\"\\/\n\t\u{1}é中😀\u{7f}")
            return String((0..<rng.nextIndex(below: 12)).map { _ in alphabet[rng.nextIndex(below: alphabet.count)] })
        case 3: return rng.nextIndex(below: 2) == 0
        case 4: return (0..<rng.nextIndex(below: 6)).map { _ in document(&rng, depth: depth + 1) }
        default:
            var object: [String: Any] = [:]
            for k in 0..<rng.nextIndex(below: 5) { object["k\(k)\u{e9}"] = document(&rng, depth: depth + 1) }
            return object
        }
    }

    /// Foundation's NSNumber for true/false (an NSNumber 0 or 1 also casts to Bool; the stored type tells).
    func isBoolean(_ number: NSNumber) -> Bool { number.objCType.pointee == CChar(UInt8(ascii: "c")) }

    /// The same tree, compared value by value (JSONSerialization's NSNumbers as Double).
    func same(_ value: JSONValue, _ reference: Any) -> Bool {
        switch value {
        case .object(let members):
            guard let other = reference as? [String: Any], other.count == members.count else { return false }
            return members.allSatisfy { key, member in other[key].map { same(member, $0) } ?? false }
        case .array(let elements):
            guard let other = reference as? [Any], other.count == elements.count else { return false }
            return zip(elements, other).allSatisfy { same($0, $1) }
        case .string(let s): return (reference as? String) == s
        case .number(let n):
            guard let number = reference as? NSNumber, !isBoolean(number) else { return false }
            // Foundation's parser on Linux is off by a few ulps on some negative decimals (-466.17937088012695
            // reads as 3 ulps below the nearest double); ours matches Double(String) exactly (tested above).
            return abs(number.doubleValue - n.double) <= 1e-14 * abs(n.double)
        case .bool(let b):
            guard let number = reference as? NSNumber, isBoolean(number) else { return false }
            return number.boolValue == b
        case .null: return reference is NSNull
        }
    }

    @Test func documentsReadAsFoundationReadsThem() throws {
        var rng = SeededGenerator(seed: 5)
        for _ in 0..<2000 {
            let root: [String: Any] = ["doc": document(&rng), "pad": [1, 2.5, "x", NSNull()] as [Any]]
            let bytes = try JSONSerialization.data(withJSONObject: root)
            let ours = try JSONValue.parse(ArraySlice([UInt8](bytes)))
            let theirs = try JSONSerialization.jsonObject(with: bytes)
            #expect(same(ours, theirs), "\(String(decoding: bytes, as: UTF8.self))")
        }
        // Escapes Foundation does not write: \u forms, surrogate pairs, \b \f.
        #expect(try parse(#"["\u00e9\ud83d\ude00\b\f\/\u0041"]"#) == .array([.string("é😀\u{8}\u{c}/A")]))
    }

    @Test func malformedDocumentsAreRefusedWithAPosition() {
        let bad: [(String, String)] = [
            ("", "unexpected end"), ("{", "member name"), ("[1,]", "expected a value"), ("[01]", "start with 0"),
            ("[1.]", "after '.'"), ("[.5]", "unexpected character '.'"), ("[-]", "after '-'"), ("[1e]", "exponent"),
            (#"["\x"]"#, "invalid escape"), ("[\"a\u{1}\"]", "control character"), (#"{"a" 1}"#, "':'"),
            ("tru", "literal"), ("[1] x", "after the JSON value"), (#"["abc"#, "unterminated"),
            (#"["\ud800"]"#, "surrogate"), (#"["\udc00"]"#, "surrogate"), (#"["\u12"]"#, "hex digits"),
            ("[1e400]", "too large"), ("[1 2]", "',' or ']'"), (#"{"a":1 "b":2}"#, "',' or '}'"),
            (String(repeating: "[", count: 100) + String(repeating: "]", count: 100), "nested deeper"),
        ]
        for (text, why) in bad {
            do {
                let value = try parse(text)
                Issue.record("\(text): accepted as \(value)")
            } catch let error as JSONSyntaxError {
                #expect(error.description.contains(why) && error.description.contains("at byte"), "\(text): \(error)")
                #expect(error.offset <= text.utf8.count)
            } catch {
                Issue.record("\(text): \(error)")
            }
        }
        // Invalid UTF-8 inside a string.
        #expect(throws: JSONSyntaxError.self) { try JSONValue.parse(ArraySlice([0x22, 0xff, 0xfe, 0x22])) }
    }

    @Test func responsesReadBackExactly() throws {
        var rng = SeededGenerator(seed: 3)
        let probabilities = (0..<500).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0x3f7f_ffff) }
            + [0, 1, .leastNonzeroMagnitude, .nan]
        let (body, length) = HTTPCodec.encodeResponse(modelName: "m\"odel", id: "r\n1", probabilities: probabilities,
                                                      binary: false)
        #expect(length == nil)
        let root = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
        #expect(root["id"] as? String == "r\n1")
        #expect(root["model_name"] as? String == "m\"odel")
        let output = try #require((root["outputs"] as? [[String: Any]])?.first)
        #expect(output["shape"] as? [Int] == [probabilities.count, 1])
        let data = try #require(output["data"] as? [Any])
        for (p, value) in zip(probabilities, data) {
            if p.isNaN {
                #expect(value is NSNull)
            } else {
                #expect(Float((value as! NSNumber).doubleValue) == p)
            }
        }
        let (binaryBody, jsonLength) = HTTPCodec.encodeResponse(modelName: "m", id: nil, probabilities: [0.25, 0.5],
                                                                binary: true)
        let header = try #require(try JSONSerialization.jsonObject(with: Data(binaryBody[..<jsonLength!])) as? [String: Any])
        let parameters = (header["outputs"] as? [[String: Any]])?.first?["parameters"] as? [String: Any]
        #expect(parameters?["binary_data_size"] as? Int == 8)
        #expect(binaryBody.count == jsonLength! + 8)
    }
}
