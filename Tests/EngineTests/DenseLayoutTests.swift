import DLRM
import Kernels
import Testing

@testable import Engine

/// Shape decisions of the dense network that need no GPU: which first top layer pads its bf16 K, and which
/// interaction kernel a model's T takes.
@Suite struct DenseLayoutTests {
    /// terabyte's r is 415 wide: the bf16 product reads K = 416, the zero column written by the conversion.
    /// Widths already a multiple of 8, and dcn (whose bf16 x_L the cross network writes), keep their K.
    @Test func theFirstBF16TopLayerPadsAnUnalignedK() {
        let terabyte = ModelPreset.terabyte.config(maxRows: 100)
        #expect(terabyte.topInputWidth == 415)
        #expect(DenseNetwork.bf16TopInputPadding(terabyte) == 416)
        #expect(DenseNetwork.bf16TopInputPadding(terabyte)! <= DenseNetwork.topStride(terabyte))
        let paper = ModelPreset.paper.config(maxRows: 100)
        #expect(DenseNetwork.bf16TopInputPadding(paper) == (paper.topInputWidth % 8 == 0 ? nil : 208))
        #expect(DenseNetwork.bf16TopInputPadding(ModelPreset.mlperfV1.config(maxRows: 100)) == 480)
        #expect(DenseNetwork.bf16TopInputPadding(ModelPreset.mlperfV2.config(maxRows: 100)) == nil)
        // 417 wide: bf16 rows would pad to 424, past the fp32 source's 420-float rows, so K stays 417.
        var odd = terabyte
        odd.bottomMLP[odd.bottomMLP.count - 1] = 66
        for t in odd.tables.indices { odd.tables[t].dim = 66 }
        #expect(odd.topInputWidth == 66 + 351)
        #expect(DenseNetwork.bf16TopInputPadding(odd) == nil)
    }

    @Test func theTiledInteractionTakesAlignedRowsOfManyTables() {
        func variant(rows: Int, dim: Int, tStride: Int? = nil, outStride: Int? = nil, t: UInt64 = 256, out: UInt64 = 512)
            -> InteractionKernel.Variant
        {
            let pairs = rows * (rows - 1) / 2
            return InteractionKernel.variant(rows: rows, dim: dim, tStride: tStride ?? rows * dim,
                                             outStride: outStride ?? (dim + pairs + 3) / 4 * 4, t: t, out: out)
        }
        #expect(variant(rows: 27, dim: 64) == .tiled)  // terabyte
        #expect(variant(rows: 27, dim: 128) == .tiled)  // mlperf-v1
        #expect(variant(rows: 27, dim: 16) == .tiled)  // kaggle
        #expect(variant(rows: 13, dim: 128) == .pairwise)  // paper: 10 blocks a sample
        #expect(variant(rows: 27, dim: 13) == .pairwise)  // no float4 rows
        #expect(variant(rows: 27, dim: 64, outStride: 415) == .pairwise)
        #expect(variant(rows: 27, dim: 64, t: 260) == .pairwise)  // an unaligned pointer
        #expect(variant(rows: 27, dim: 4096) == .pairwise)  // a block past 160 KB of shared memory
    }
}
