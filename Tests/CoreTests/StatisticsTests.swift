import Core
import Testing

@Suite struct StatisticsTests {
    @Test func medianOfOddAndEvenCounts() {
        #expect([3.0, 1, 2].median == 2)
        #expect([4.0, 1, 3, 2].median == 2.5)
        #expect([Double]().median.isNaN)
    }

    @Test func nearestRankPercentiles() {
        let values = (1...100).map(Double.init)
        #expect(values.percentile(90) == 90)
        #expect(values.percentile(99) == 99)
        #expect(values.percentile(0) == 1)
        #expect(values.percentile(100) == 100)
    }
}

@Suite struct CoreValueTests {
    @Test func cacheDirectoriesFollowTheEnvironment() {
        #expect(CacheDirectory.resolve(name: "k", variable: "V", environment: ["V": "/x"]) == "/x")
        #expect(CacheDirectory.resolve(name: "k", variable: "V", environment: ["V": "off", "HOME": "/h"]) == nil)
        #expect(CacheDirectory.resolve(name: "k", variable: "V", environment: ["XDG_CACHE_HOME": "/c", "HOME": "/h"])
            == "/c/bagel/k")
        #expect(CacheDirectory.resolve(name: "k", variable: "V", environment: ["HOME": "/h"]) == "/h/.cache/bagel/k")
        #expect(CacheDirectory.resolve(name: "k", variable: "V", environment: [:]) == nil)
    }

    @Test func stableHashesSeparateTheirParts() {
        #expect(StableHasher.hex(["ab", "c"]) != StableHasher.hex(["a", "bc"]))
        #expect(StableHasher.hex(["ab", "c"]) == StableHasher.hex(["ab", "c"]))
        #expect(StableHasher.hex([]).count == 32)
    }

    @Test func rowBytesOfEveryStorageType() {
        #expect(StorageType.fp32.rowBytes(dim: 128) == 512)
        #expect(StorageType.bf16.rowBytes(dim: 13) == 26)
        #expect(StorageType.int8.rowBytes(dim: 128) == 136)
        #expect(StorageType.int4.rowBytes(dim: 128) == 68 && StorageType.int4.codeBytes(dim: 128) == 64)
        #expect(StorageType.int4.unsupported(dim: 12) != nil && StorageType.int4.unsupported(dim: 16) == nil)
        #expect(IndexType(bits: 32) == .int32 && IndexType(bits: 64)?.byteWidth == 8 && IndexType(bits: 16) == nil)
    }

    @Test func errorsCarryTheirLocationAndPrintIt() {
        let error = BagelError(.invalidBatch, "index 9 is out of range", at: ErrorLocation(table: 2, sample: 5))
        #expect(error.description == "index 9 is out of range")
        let located = error.located(file: "day.tsv", line: 17)
        #expect(located.description == "day.tsv:17: index 9 is out of range")
        #expect(located.location.table == 2 && located.location.sample == 5)
    }
}
