import CHostCopy

/// Copies that check what they copy, for packing a batch into pinned staging memory in one pass (Sources/CHostCopy:
/// AVX2, with streaming stores for large copies, where the CPU has it).
public enum HostCopy {
    /// Whether large copies stream their stores on this CPU.
    public static var streams: Bool { bagel_host_copy_streams() != 0 }

    /// Copies `count` values; returns the largest read as unsigned (a negative value is huge).
    public static func copyReturningLargest(_ source: UnsafePointer<Int32>, to destination: UnsafeMutablePointer<Int32>,
                                            count: Int) -> UInt32 {
        bagel_copy_int32_largest(source, destination, count)
    }

    /// Copies `count` values; returns the largest read as unsigned (a negative value is huge).
    public static func copyReturningLargest(_ source: UnsafePointer<Int64>, to destination: UnsafeMutablePointer<Int64>,
                                            count: Int) -> UInt64 {
        bagel_copy_int64_largest(source, destination, count)
    }

    /// Copies `count` values as 24-bit indices in two arrays (bits 0-15 to `low`, 16-23 to `high`); returns the
    /// largest source value read as unsigned (a negative value is huge).
    public static func splitReturningLargest(_ source: UnsafePointer<Int32>, low: UnsafeMutablePointer<UInt16>,
                                             high: UnsafeMutablePointer<UInt8>, count: Int) -> UInt32 {
        bagel_split_int32_largest(source, low, high, count)
    }

    /// Copies `count` values; true when every one is finite.
    public static func copyCheckingFinite(_ source: UnsafePointer<Float>, to destination: UnsafeMutablePointer<Float>,
                                          count: Int) -> Bool {
        bagel_copy_float_finite(source, destination, count) != 0
    }
}
