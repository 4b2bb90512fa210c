import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What an operator reads when a command is refused or fails before it runs: the exit code and the message.
extension EndToEndTests {
    /// A bad level or format from the environment is refused naming the variable, not a flag the command line lacks.
    @Test func aBadLogSettingIsRefusedNamingWhereItCameFrom() throws {
        for (flag, variable) in [("--log-level", "STOVEPIPE_LOG_LEVEL"), ("--log-format", "STOVEPIPE_LOG_FORMAT")] {
            let (fromEnvironment, environmentOutput) = try EndToEndTests.runToExit(
                ["serve", "--port", "0"], environment: [variable: "verbose"])
            #expect(fromEnvironment == 64, "\(environmentOutput)")
            #expect(environmentOutput.contains("Error: \(variable) must be"), "\(environmentOutput)")
            let (fromFlag, flagOutput) = try EndToEndTests.runToExit(["serve", "--port", "0", flag, "verbose"])
            #expect(fromFlag == 64, "\(flagOutput)")
            #expect(flagOutput.contains("Error: \(flag) must be"), "\(flagOutput)")
        }
    }

    /// GET /topics/{topic} answers 404 for a topic that does not exist; `topics` printed zeros for it and exited 0,
    /// so a misspelt topic read as an empty, healthy one. Refused before any connection, as a usage error.
    @Test func topicsRefusesATopicThatDoesNotExistAndANegativeCount() throws {
        let unreachable = ["--mysql-url", "mysql://stovepipe@127.0.0.1:1/stovepipe"]
        for arguments in [
            ["topics"] + unreachable + ["--topic", "proces"],
            ["topics", "list"] + unreachable + ["--topic", "process", "--topic", "proces"],
            ["topics", "redrive"] + unreachable + ["--topic", "proces", "request/app/main/1"],
        ] {
            let (status, output) = try EndToEndTests.runToExit(arguments)
            #expect(status == 64, "\(arguments): \(output)")
            #expect(output.contains("no topic 'proces'; the topics are: process"), "\(arguments): \(output)")
        }
        let (status, output) = try EndToEndTests.runToExit(["topics"] + unreachable + ["--dead-letters=-1"])
        #expect(status == 64, "\(output)")
        #expect(output.contains("--dead-letters must be 0 or more"), "\(output)")
    }
}
