// sharding.cu — a sharded model's pooled vectors put back together on the GPU that runs a sample's dense part.
//
//   assemble_pooled   After the all-to-all, this GPU holds, for each of its `rows` samples, every GPU p's pooled
//                     row (p's shards' vectors side by side, width[p] floats), one block per sender: block p starts
//                     at prefix[p] * rows floats. Output column c (out[s * out_stride + target[c]]) is the sum of
//                     its sources k in [start[c], start[c + 1]): receive[prefix[g] * rows + s * width[g] + column[k]]
//                     with g = gpu[k] — one source for table- and column-wise shards (copied as is), one per GPU
//                     holding rows of a row-wise table (their partial sums added in GPU order).

extern "C" __global__ void assemble_pooled(const float *__restrict__ receive, int rows, const int *__restrict__ prefix,
                                           const int *__restrict__ width, int columns, const int *__restrict__ target,
                                           const int *__restrict__ start, const int *__restrict__ gpu,
                                           const int *__restrict__ column, float *__restrict__ out,
                                           long long out_stride) {
    const long long total = (long long)rows * columns;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long s = k / columns;
        const int c = (int)(k - s * columns);
        const int first = start[c], last = start[c + 1];
        float sum = 0.0f;
        for (int j = first; j < last; ++j) {
            const int g = gpu[j];
            const float v = receive[(long long)prefix[g] * rows + s * width[g] + column[j]];
            sum = j == first ? v : sum + v;
        }
        out[s * out_stride + target[c]] = sum;
    }
}
