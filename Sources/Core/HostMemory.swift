#if canImport(Glibc)
    import Glibc
#endif

/// Host memory settings for a process that allocates batch-sized arrays over and over (a reading thread makes a
/// batch's index arrays, megabytes each, for every batch).
public enum HostMemory {
    /// glibc hands allocations above its mmap threshold (128 KB at first) fresh pages from the kernel and returns
    /// them on free, so every batch's arrays page-fault again: reading the paper preset's batches from MLPerf files
    /// took 4.6–5.3 ms a batch of 2048 against 1.1–1.4 ms once they came from the heap (`bench host --data`, 2
    /// cores). Raising the threshold to 32 MB (and keeping up to 256 MB of freed memory before giving it back) keeps
    /// such arrays in the heap; tables and weights, larger, are still mapped. No effect where the C library is not
    /// glibc.
    public static func keepBatchArraysInTheHeap() {
        #if canImport(Glibc)
            // mallopt is in malloc.h, which the Glibc module leaves out: looked up by name (absent under another libc).
            typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
            guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
            let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
            let trimThreshold: Int32 = -1, mmapThreshold: Int32 = -3  // M_TRIM_THRESHOLD, M_MMAP_THRESHOLD (malloc.h)
            // 32 MB is the largest threshold glibc accepts (half its per-thread heap); a batch's arrays are smaller.
            _ = mallopt(mmapThreshold, 32 << 20)
            _ = mallopt(trimThreshold, 256 << 20)
        #endif
    }
}
