import BagelCLI
import Core

HostMemory.keepBatchArraysInTheHeap()
await BagelCommand.runAsync()
