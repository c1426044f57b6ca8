// Declarations of the CUDA driver, NVRTC and cuBLASLt entry points Bagel calls, written from the
// public API documentation. Only types and function-pointer signatures live here (plus one dladdr
// helper), so Swift gets the C calling convention and struct layouts right; the functions
// themselves are found with dlsym at run time (Sources/CUDA), and nothing is linked against CUDA.
#ifndef BAGEL_CCUDA_H
#define BAGEL_CCUDA_H

#include <stddef.h>
#include <stdint.h>

// The file a loaded symbol comes from (dladdr); 1 on success. Defined in ccuda.c.
int bagel_library_path_of(const void *address, char *path, size_t capacity);

// ---- Driver API -------------------------------------------------------------------------------
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef struct CUgraph_st *CUgraph;
typedef struct CUgraphExec_st *CUgraphExec;

// CUaccessPolicyWindow: an L2 persistence window over [base_ptr, base_ptr + num_bytes).
typedef struct {
    void *base_ptr;
    size_t num_bytes;
    float hitRatio;
    int hitProp;   // CUaccessProperty: 0 normal, 1 streaming, 2 persisting
    int missProp;
} BagelAccessPolicyWindow;

// CUstreamAttrValue / CUlaunchAttributeValue: a union padded to 64 bytes.
typedef union {
    BagelAccessPolicyWindow accessPolicyWindow;
    char pad[64];
} BagelStreamAttrValue;

typedef CUresult (*PFN_cuInit)(unsigned int flags);
typedef CUresult (*PFN_cuDriverGetVersion)(int *version);
typedef CUresult (*PFN_cuGetErrorName)(CUresult error, const char **name);
typedef CUresult (*PFN_cuGetErrorString)(CUresult error, const char **text);
typedef CUresult (*PFN_cuDeviceGetCount)(int *count);
typedef CUresult (*PFN_cuDeviceGet)(CUdevice *device, int ordinal);
typedef CUresult (*PFN_cuDeviceGetName)(char *name, int length, CUdevice device);
typedef CUresult (*PFN_cuDeviceGetAttribute)(int *value, int attribute, CUdevice device);
typedef CUresult (*PFN_cuDeviceTotalMem)(size_t *bytes, CUdevice device);
typedef CUresult (*PFN_cuDevicePrimaryCtxRetain)(CUcontext *context, CUdevice device);
typedef CUresult (*PFN_cuDevicePrimaryCtxRelease)(CUdevice device);
typedef CUresult (*PFN_cuCtxSetCurrent)(CUcontext context);
typedef CUresult (*PFN_cuCtxSynchronize)(void);
typedef CUresult (*PFN_cuCtxGetLimit)(size_t *value, int limit);
typedef CUresult (*PFN_cuCtxSetLimit)(int limit, size_t value);
typedef CUresult (*PFN_cuCtxResetPersistingL2Cache)(void);
typedef CUresult (*PFN_cuMemGetInfo)(size_t *free, size_t *total);
typedef CUresult (*PFN_cuMemAlloc)(CUdeviceptr *pointer, size_t bytes);
typedef CUresult (*PFN_cuMemFree)(CUdeviceptr pointer);
typedef CUresult (*PFN_cuMemHostAlloc)(void **pointer, size_t bytes, unsigned int flags);
typedef CUresult (*PFN_cuMemFreeHost)(void *pointer);
typedef CUresult (*PFN_cuMemHostGetDevicePointer)(CUdeviceptr *device, void *host, unsigned int flags);
typedef CUresult (*PFN_cuMemHostRegister)(void *pointer, size_t bytes, unsigned int flags);
typedef CUresult (*PFN_cuMemHostUnregister)(void *pointer);
typedef CUresult (*PFN_cuMemcpyHtoDAsync)(CUdeviceptr destination, const void *source, size_t bytes, CUstream stream);
typedef CUresult (*PFN_cuMemcpyDtoHAsync)(void *destination, CUdeviceptr source, size_t bytes, CUstream stream);
typedef CUresult (*PFN_cuMemcpyDtoDAsync)(CUdeviceptr destination, CUdeviceptr source, size_t bytes, CUstream stream);
typedef CUresult (*PFN_cuMemsetD32Async)(CUdeviceptr destination, unsigned int value, size_t count, CUstream stream);
typedef CUresult (*PFN_cuMemsetD8Async)(CUdeviceptr destination, unsigned char value, size_t count, CUstream stream);
typedef CUresult (*PFN_cuStreamCreate)(CUstream *stream, unsigned int flags);
typedef CUresult (*PFN_cuStreamCreateWithPriority)(CUstream *stream, unsigned int flags, int priority);
typedef CUresult (*PFN_cuCtxGetStreamPriorityRange)(int *least, int *greatest);
typedef CUresult (*PFN_cuStreamDestroy)(CUstream stream);
typedef CUresult (*PFN_cuStreamSynchronize)(CUstream stream);
typedef CUresult (*PFN_cuStreamSetAttribute)(CUstream stream, int attribute, const BagelStreamAttrValue *value);
typedef CUresult (*PFN_cuStreamBeginCapture)(CUstream stream, int mode);
typedef CUresult (*PFN_cuStreamEndCapture)(CUstream stream, CUgraph *graph);
typedef CUresult (*PFN_cuGraphInstantiateWithFlags)(CUgraphExec *exec, CUgraph graph, unsigned long long flags);
typedef CUresult (*PFN_cuGraphLaunch)(CUgraphExec exec, CUstream stream);
typedef CUresult (*PFN_cuGraphExecDestroy)(CUgraphExec exec);
typedef CUresult (*PFN_cuGraphDestroy)(CUgraph graph);
typedef CUresult (*PFN_cuEventCreate)(CUevent *event, unsigned int flags);
typedef CUresult (*PFN_cuEventDestroy)(CUevent event);
typedef CUresult (*PFN_cuEventRecord)(CUevent event, CUstream stream);
typedef CUresult (*PFN_cuEventSynchronize)(CUevent event);
typedef CUresult (*PFN_cuStreamWaitEvent)(CUstream stream, CUevent event, unsigned int flags);
typedef CUresult (*PFN_cuEventElapsedTime)(float *milliseconds, CUevent start, CUevent end);
typedef CUresult (*PFN_cuModuleLoadData)(CUmodule *module, const void *image);
typedef CUresult (*PFN_cuModuleUnload)(CUmodule module);
typedef CUresult (*PFN_cuModuleGetFunction)(CUfunction *function, CUmodule module, const char *name);
typedef CUresult (*PFN_cuFuncGetAttribute)(int *value, int attribute, CUfunction function);
typedef CUresult (*PFN_cuFuncSetAttribute)(CUfunction function, int attribute, int value);
typedef CUresult (*PFN_cuOccupancyMaxActiveBlocksPerMultiprocessor)(int *blocks, CUfunction function, int blockSize,
                                                                      size_t dynamicSharedBytes);
typedef CUresult (*PFN_cuLaunchKernel)(CUfunction function, unsigned int gridX, unsigned int gridY,
                                        unsigned int gridZ, unsigned int blockX, unsigned int blockY,
                                        unsigned int blockZ, unsigned int sharedBytes, CUstream stream,
                                        void **parameters, void **extra);

// ---- NVRTC ------------------------------------------------------------------------------------
typedef int nvrtcResult;
typedef struct _nvrtcProgram *nvrtcProgram;

typedef const char *(*PFN_nvrtcGetErrorString)(nvrtcResult result);
typedef nvrtcResult (*PFN_nvrtcVersion)(int *major, int *minor);
typedef nvrtcResult (*PFN_nvrtcCreateProgram)(nvrtcProgram *program, const char *source, const char *name,
                                              int headerCount, const char *const *headers,
                                              const char *const *includeNames);
typedef nvrtcResult (*PFN_nvrtcDestroyProgram)(nvrtcProgram *program);
typedef nvrtcResult (*PFN_nvrtcCompileProgram)(nvrtcProgram program, int optionCount, const char *const *options);
typedef nvrtcResult (*PFN_nvrtcGetProgramLogSize)(nvrtcProgram program, size_t *size);
typedef nvrtcResult (*PFN_nvrtcGetProgramLog)(nvrtcProgram program, char *log);
typedef nvrtcResult (*PFN_nvrtcGetCUBINSize)(nvrtcProgram program, size_t *size);
typedef nvrtcResult (*PFN_nvrtcGetCUBIN)(nvrtcProgram program, char *cubin);

// ---- cuBLASLt ---------------------------------------------------------------------------------
typedef int cublasStatus_t;
typedef struct cublasLtContext *cublasLtHandle_t;
typedef struct cublasLtMatmulDescOpaque_t *cublasLtMatmulDesc_t;
typedef struct cublasLtMatrixLayoutOpaque_t *cublasLtMatrixLayout_t;
typedef struct cublasLtMatmulPreferenceOpaque_t *cublasLtMatmulPreference_t;

typedef struct {
    uint64_t data[8];
} BagelMatmulAlgo;

typedef struct {
    BagelMatmulAlgo algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} BagelMatmulHeuristicResult;

typedef size_t (*PFN_cublasLtGetVersion)(void);
typedef const char *(*PFN_cublasLtGetStatusString)(cublasStatus_t status);
typedef cublasStatus_t (*PFN_cublasLtCreate)(cublasLtHandle_t *handle);
typedef cublasStatus_t (*PFN_cublasLtDestroy)(cublasLtHandle_t handle);
typedef cublasStatus_t (*PFN_cublasLtMatmulDescCreate)(cublasLtMatmulDesc_t *desc, int computeType, int scaleType);
typedef cublasStatus_t (*PFN_cublasLtMatmulDescDestroy)(cublasLtMatmulDesc_t desc);
typedef cublasStatus_t (*PFN_cublasLtMatmulDescSetAttribute)(cublasLtMatmulDesc_t desc, int attribute,
                                                              const void *value, size_t size);
typedef cublasStatus_t (*PFN_cublasLtMatrixLayoutCreate)(cublasLtMatrixLayout_t *layout, int type, uint64_t rows,
                                                          uint64_t cols, int64_t ld);
typedef cublasStatus_t (*PFN_cublasLtMatrixLayoutDestroy)(cublasLtMatrixLayout_t layout);
typedef cublasStatus_t (*PFN_cublasLtMatmulPreferenceCreate)(cublasLtMatmulPreference_t *preference);
typedef cublasStatus_t (*PFN_cublasLtMatmulPreferenceDestroy)(cublasLtMatmulPreference_t preference);
typedef cublasStatus_t (*PFN_cublasLtMatmulPreferenceSetAttribute)(cublasLtMatmulPreference_t preference,
                                                                    int attribute, const void *value, size_t size);
typedef cublasStatus_t (*PFN_cublasLtMatmulAlgoGetHeuristic)(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                                              cublasLtMatmulPreference_t preference,
                                                              int requested, BagelMatmulHeuristicResult *results,
                                                              int *returned);
typedef cublasStatus_t (*PFN_cublasLtMatmul)(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha,
                                              const void *a, cublasLtMatrixLayout_t aLayout, const void *b,
                                              cublasLtMatrixLayout_t bLayout, const void *beta, const void *c,
                                              cublasLtMatrixLayout_t cLayout, void *d, cublasLtMatrixLayout_t dLayout,
                                              const BagelMatmulAlgo *algo, void *workspace, size_t workspaceBytes,
                                              CUstream stream);
// An algorithm's capabilities and configuration (split-K variants of the heuristic's candidates).
typedef cublasStatus_t (*PFN_cublasLtMatmulAlgoCapGetAttribute)(const BagelMatmulAlgo *algo, int attribute, void *value,
                                                                 size_t size, size_t *written);
typedef cublasStatus_t (*PFN_cublasLtMatmulAlgoConfigSetAttribute)(BagelMatmulAlgo *algo, int attribute,
                                                                    const void *value, size_t size);
typedef cublasStatus_t (*PFN_cublasLtMatmulAlgoConfigGetAttribute)(const BagelMatmulAlgo *algo, int attribute,
                                                                    void *value, size_t size, size_t *written);
typedef cublasStatus_t (*PFN_cublasLtMatmulAlgoCheck)(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                                      cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                                      cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                                      const BagelMatmulAlgo *algo, BagelMatmulHeuristicResult *result);

// ---- NCCL (collectives across GPUs; libnccl.so.2, loaded at run time) -------------------------
typedef int ncclResult_t;            /* ncclSuccess = 0 */
typedef struct ncclComm *ncclComm_t;
typedef struct { char internal[128]; } ncclUniqueId;
typedef int ncclDataType_t;          /* ncclInt8 0, ncclUint8 1, ncclInt32 2, ncclFloat32 7 */
typedef int ncclRedOp_t;             /* ncclSum 0 */
typedef ncclResult_t (*PFN_ncclGetVersion)(int *version);
typedef const char *(*PFN_ncclGetErrorString)(ncclResult_t result);
typedef ncclResult_t (*PFN_ncclGetUniqueId)(ncclUniqueId *id);
typedef ncclResult_t (*PFN_ncclCommInitRank)(ncclComm_t *comm, int ranks, ncclUniqueId id, int rank);
typedef ncclResult_t (*PFN_ncclCommInitAll)(ncclComm_t *comms, int devices, const int *deviceList);
typedef ncclResult_t (*PFN_ncclCommDestroy)(ncclComm_t comm);
typedef ncclResult_t (*PFN_ncclGroupStart)(void);
typedef ncclResult_t (*PFN_ncclGroupEnd)(void);
typedef ncclResult_t (*PFN_ncclSend)(const void *buffer, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                                     CUstream stream);
typedef ncclResult_t (*PFN_ncclRecv)(void *buffer, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                                     CUstream stream);
typedef ncclResult_t (*PFN_ncclAllReduce)(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                                          ncclComm_t comm, CUstream stream);

// ---- Kernel ABI --------------------------------------------------------------------------------
// The records the kernels read (TableArgs), shared with the NVRTC sources; the file lives beside
// them so the binary embeds the same text it is compiled from.
#include "../../Kernels/cuda/kernel_abi.h"

#endif
