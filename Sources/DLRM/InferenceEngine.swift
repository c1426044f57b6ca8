import Core
/// Something that computes click probabilities for batches of a model: the CPU reference engine or
/// the GPU engine. Engines are safe to call from several threads; calls may be serialised inside.
public protocol InferenceEngine: AnyObject, Sendable {
    var model: Model { get }
    /// One line saying what runs the model ("cpu: 2 threads", "gpu: NVIDIA H100 80GB HBM3 ...").
    var description: String { get }
    /// Probabilities, one per sample, for a batch that passed `Batch.validate(for:)`.
    /// Engines validate again and throw `BagelError(.invalidBatch, ...)` for a bad batch.
    func predict(_ batch: Batch) throws -> [Float]
    /// Bytes of device memory in use where the engine runs on a device (metrics); nil on the CPU.
    var deviceMemoryInUse: Int? { get }
    /// Lookups served so far from HBM and in all, per table split with the host tier (metrics); nil
    /// when no table is split.
    var tierCounts: [TierCount]? { get }
}

/// One split table's lookups so far: those whose row was in HBM, and all of them.
public struct TierCount: Sendable, Equatable {
    public let table: Int
    public let hbmLookups: Int
    public let lookups: Int

    public init(table: Int, hbmLookups: Int, lookups: Int) {
        self.table = table
        self.hbmLookups = hbmLookups
        self.lookups = lookups
    }
}

extension InferenceEngine {
    public var deviceMemoryInUse: Int? { nil }
    public var tierCounts: [TierCount]? { nil }
}

/// Which engine to run a model on.
public enum DeviceChoice: String, Sendable, CaseIterable {
    case auto, gpu, cpu
}
