import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What an operator reads when a command is refused or fails before it runs: the exit code and the message.
extension EndToEndTests {
    /// The stderr lines of a run, each parsed as a JSON object; a line that is not one fails the test.
    private func jsonLines(_ output: String) -> [[String: Any]] {
        output.split(separator: "\n").compactMap { line in
            let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
            #expect(object != nil, "not a JSON object: \(line)")
            return object
        }
    }

    /// The image sets STOVEPIPE_LOG_FORMAT=json: the line saying why serve stopped must reach a JSON log pipeline
    /// as JSON like every other line, a usage error (a bad queues file) and a failure (a taken port) alike.
    @Test func startUpFailuresUnderJSONLogsAreJSONLines() throws {
        // A port another socket listens on.
        let (holder, taken) = try silentListener()
        defer { close(holder) }

        let (bindStatus, bindOutput) = try EndToEndTests.runToExit(["serve", "--port", "\(taken)", "--log-format", "json"])
        #expect(bindStatus == 1, "\(bindOutput)")
        let bindLines = jsonLines(bindOutput)
        #expect(bindLines.last?["level"] as? String == "critical", "\(bindOutput)")
        #expect((bindLines.last?["msg"] as? String)?.contains("Address already in use") == true, "\(bindOutput)")
        #expect((bindLines.last?["msg"] as? String)?.contains("127.0.0.1:\(taken)") == true, "names the address: \(bindOutput)")

        let missing = "/nonexistent/stovepipe-queues-\(UUID().uuidString).json"
        let (usageStatus, usageOutput) = try EndToEndTests.runToExit(
            ["serve", "--port", "0", "--queues", missing], environment: ["STOVEPIPE_LOG_FORMAT": "json"])
        #expect(usageStatus == 64, "\(usageOutput)")
        let usageLines = jsonLines(usageOutput)
        #expect(usageLines.count == 1, "\(usageOutput)")
        #expect(usageLines.last?["level"] as? String == "critical", "\(usageOutput)")
        #expect((usageLines.last?["msg"] as? String)?.contains(missing) == true, "\(usageOutput)")

        // Text logs keep the usual form, with the usage that helps a person at a terminal.
        let (textStatus, textOutput) = try EndToEndTests.runToExit(["serve", "--port", "0", "--queues", missing])
        #expect(textStatus == 64, "\(textOutput)")
        #expect(textOutput.hasPrefix("Error: invalid queues file: \(missing)"), "\(textOutput)")
        #expect(textOutput.contains("Usage: stovepipe serve"), "\(textOutput)")
    }

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
            // Accepted, serve would run on: the run is stopped after its timeout and fails the test.
            let finished = try runStovepipe(arguments, timeout: 20)
            let (status, output) = (finished.status, finished.stderr)
            #expect(status == 64, "\(arguments): \(output)")
            #expect(output.contains("no topic 'proces'; the topics are: process"), "\(arguments): \(output)")
        }
        let (status, output) = try EndToEndTests.runToExit(["topics"] + unreachable + ["--dead-letters=-1"])
        #expect(status == 64, "\(output)")
        #expect(output.contains("--dead-letters must be 0 or more"), "\(output)")
    }

    /// An option given twice was taken at its last value, silently: `--mysql-url A ... --mysql-url B` ran on B. As with
    /// a secret and a secret file together, neither is more plainly meant, so it is a usage error naming the option.
    @Test func anOptionGivenTwiceIsAUsageErrorNamingIt() throws {
        for (arguments, option, usage) in [
            (["serve", "--port", "0", "--port", "0"], "--port", "stovepipe serve"),
            (["serve", "--port", "0", "--log-level=info", "--log-level", "debug"], "--log-level", "stovepipe serve"),
            (["--port=0", "--shutdown-timeout", "1", "--shutdown-timeout=2"], "--shutdown-timeout", "stovepipe serve"),
            (["migrate", "--mysql-url", "mysql://a@127.0.0.1:1/a", "--mysql-url=mysql://b@127.0.0.1:1/b"], "--mysql-url",
                "stovepipe migrate"),
            (["healthcheck", "--timeout", "1", "--timeout", "2"], "--timeout", "stovepipe healthcheck"),
        ] {
            // Accepted, serve would run on: the run is stopped after its timeout and fails the test.
            let finished = try runStovepipe(arguments, timeout: 20)
            let (status, output) = (finished.status, finished.stderr)
            #expect(status == 64, "\(arguments): \(output)")
            #expect(output.hasPrefix("Error: \(option) is given more than once: give it once"), "\(arguments): \(output)")
            #expect(output.contains("Usage: \(usage)"), "\(arguments): \(output)")
        }
        // `topics --topic` lists several topics; it alone may repeat (here it gets as far as connecting).
        let (status, output) = try EndToEndTests.runToExit(
            ["topics", "--mysql-url", "mysql://stovepipe@127.0.0.1:1/stovepipe", "--topic", "process", "--topic", "process"])
        #expect(status == 1, "\(output)")
        #expect(output.contains("cannot connect"), "\(output)")
    }
    /// serve named the database it could not reach; migrate and topics said only "mysql unavailable (error 2002 …)",
    /// which leaves an operator with several databases guessing which URL was used.
    @Test func migrateAndTopicsNameTheDatabaseTheyCannotReach() throws {
        let environment = ["STOVEPIPE_MYSQL_URL": "mysql://app:s3cret@127.0.0.1:1/ledger?connect-timeout=2"]
        for command in [["migrate"], ["topics"], ["topics", "redrive", "request/a/1"]] {
            let (status, output) = try EndToEndTests.runToExit(command, environment: environment)
            #expect(status == 1, "\(command): \(output)")
            #expect(output.contains("mysql://app:***@127.0.0.1:1/ledger"), "\(command): \(output)")
            #expect(output.contains("cannot connect"), "\(command): \(output)")
            #expect(!output.contains("s3cret"), "\(command): \(output)")
        }
    }
}
