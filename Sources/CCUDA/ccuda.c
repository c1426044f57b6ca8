// The only code in this target: dladdr, which Swift's Glibc module does not expose (it needs
// _GNU_SOURCE). Everything else here is declarations (include/ccuda.h).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include "ccuda.h"

int bagel_library_path_of(const void *address, char *path, size_t capacity) {
    Dl_info info;
    if (capacity == 0 || dladdr(address, &info) == 0 || info.dli_fname == NULL) return 0;
    strncpy(path, info.dli_fname, capacity - 1);
    path[capacity - 1] = 0;
    return 1;
}
