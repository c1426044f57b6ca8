import Foundation
import Synchronization
import Testing

@testable import Core

@Suite struct HostParallelTests {
    /// With a width, every index runs exactly once, results come back in index order, and no more than `width`
    /// bodies run at once.
    @Test func widthBoundsTheThreadsAndCoversEveryIndex() {
        final class Gauge: Sendable {
            let state = Mutex<(now: Int, most: Int, seen: [Int])>((0, 0, []))
            func enter(_ i: Int) { state.withLock { $0.now += 1; $0.most = max($0.most, $0.now); $0.seen.append(i) } }
            func leave() { state.withLock { $0.now -= 1 } }
        }
        for count in [0, 1, 2, 7, 64] {
            for width in [nil, 1, 2, 3, 8, 100] as [Int?] {
                let gauge = Gauge()
                let results = HostParallel.map(count, parallel: true, width: width) { i -> Int in
                    gauge.enter(i)
                    Thread.sleep(forTimeInterval: 0.0005)  // long enough for others to overlap
                    gauge.leave()
                    return i * 3
                }
                #expect(results == (0..<count).map { $0 * 3 }, "count \(count), width \(String(describing: width))")
                let (most, seen) = gauge.state.withLock { ($0.most, $0.seen) }
                #expect(seen.sorted() == Array(0..<count))
                if let width { #expect(most <= max(width, 1), "count \(count), width \(width): \(most) at once") }
            }
        }
    }

    @Test func copyWidthIsHalfTheCoresAtLeastTwo() {
        guard ProcessInfo.processInfo.environment["BAGEL_HOST_COPY_THREADS"] == nil else { return }
        #expect(HostParallel.copyWidth == max(2, ProcessInfo.processInfo.activeProcessorCount / 2))
    }
}
