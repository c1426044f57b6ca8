import BagelCLI

await BagelCommand.runAsync()
