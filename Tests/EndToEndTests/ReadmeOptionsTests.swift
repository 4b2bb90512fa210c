import Foundation
import Testing

/// The README's flag tables against what each command's `--help` prints: every option of every command is documented,
/// with its environment variable and default, and the tables name no option that does not exist.
@Suite struct ReadmeOptionsTests {
    /// One option as `--help` describes it.
    struct HelpOption: Equatable {
        let name: String
        let defaultText: String?
        let variable: String?
    }

    /// One row of a README flag table for one of the flags in its first cell.
    struct ReadmeRow {
        let name: String
        /// The row's default for this flag: the cell split at ", " when the cell names several flags.
        let defaultText: String?
        /// The environment cell, nil in a table without that column.
        let environment: String?
        let line: String
    }

    /// The commands whose options the README documents.
    static let commands: [[String]] = [["serve"], ["migrate"], ["topics", "list"], ["topics", "redrive"], ["healthcheck"]]

    /// The options of `arguments --help`: an entry starts at a line indented by two spaces and runs on over the lines
    /// indented further (ArgumentParser wraps the help to the terminal's width).
    static func helpOptions(_ arguments: [String]) throws -> [HelpOption] {
        let (status, help) = try EndToEndTests.runToExit(arguments + ["--help"], readingStandardOutput: true)
        #expect(status == 0, "\(arguments)")
        var entries: [String] = []
        var (inOptions, inEntry) = (false, false)
        for line in help.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("OPTIONS:") { inOptions = true; continue }
            guard inOptions else { continue }
            if line.hasPrefix("  --") {
                entries.append(String(line.dropFirst(2)))
                inEntry = true
            } else if inEntry, line.hasPrefix("   ") {
                entries[entries.count - 1] += " " + line.trimmingCharacters(in: .whitespaces)
            } else {
                inEntry = false
            }
        }
        return entries.map { entry in
            let name = String(entry.prefix { $0 != " " })
            let defaultText = entry.firstMatch(of: /\(default: ([^)]*)\)/).map { String($0.1) }
            let variable = entry.firstMatch(of: /env (STOVEPIPE_[A-Z_]+)/).map { String($0.1) }
            return HelpOption(name: name, defaultText: defaultText, variable: variable)
        }
    }

    /// The rows of every README table whose header starts with `flag`, one per flag named in a row's first cell.
    static func readmeRows() throws -> [ReadmeRow] {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("README.md")
        let lines = try String(contentsOf: readme, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        func cells(_ line: Substring) -> [String] {
            line.trimmingCharacters(in: .whitespaces).dropFirst().dropLast().split(separator: "|", omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespaces) }
        }
        var rows: [ReadmeRow] = []
        var header: [String]?
        for line in lines {
            guard line.hasPrefix("|") else { header = nil; continue }
            let row = cells(line)
            if header == nil {
                header = row.first == "flag" ? row : []
                continue
            }
            guard let header, !header.isEmpty, !row.allSatisfy({ $0.allSatisfy { "-: ".contains($0) } }) else { continue }
            let names = row[0].matches(of: /`(--[a-z-]+)`/).map { String($0.1) }
            let defaults = header.firstIndex(of: "default").flatMap { $0 < row.count ? row[$0] : nil }
            let split = defaults.map { $0.components(separatedBy: ", ") }
            let environment = header.firstIndex(of: "environment").flatMap { $0 < row.count ? row[$0] : nil }
            for (index, name) in names.enumerated() {
                let own = names.count > 1 ? split.flatMap { $0.count == names.count ? $0[index] : nil } : defaults
                rows.append(ReadmeRow(name: name, defaultText: own, environment: environment, line: String(line)))
            }
        }
        return rows
    }

    /// Two defaults are the same when both are numbers of one value, or the README's is the help's in backticks;
    /// a README default in words (`2 x cores`, `$TMPDIR/...`) is not compared.
    static func sameDefault(help: String, readme: String) -> Bool? {
        if let number = Double(help), let documented = Double(readme) { return number == documented }
        if readme.hasPrefix("`"), readme.hasSuffix("`"), !readme.contains("$") { return readme == "`\(help)`" }
        return nil
    }

    @Test func everyOptionOfEveryCommandIsInAReadmeTableAndNoOther() throws {
        let rows = try Self.readmeRows()
        #expect(rows.count >= 40, "\(rows.count) flag rows in README.md")
        var all: Set<String> = []
        for command in Self.commands {
            let options = try Self.helpOptions(command)
            #expect(!options.isEmpty, "\(command)")
            for option in options {
                all.insert(option.name)
                #expect(rows.contains { $0.name == option.name }, "\(command) \(option.name) is not in a README flag table")
            }
        }
        for row in rows { #expect(all.contains(row.name), "README documents \(row.name), which no command has: \(row.line)") }
    }

    @Test func theReadmeTablesGiveEachOptionsDefaultAndEnvironmentVariable() throws {
        let rows = try Self.readmeRows()
        for command in Self.commands {
            for option in try Self.helpOptions(command) {
                for row in rows where row.name == option.name {
                    if let variable = option.variable {
                        #expect(row.environment?.contains("`\(variable)`") == true, "\(option.name): \(row.line)")
                    } else if let environment = row.environment {
                        #expect(!environment.contains("STOVEPIPE_"), "\(option.name) reads no variable: \(row.line)")
                    }
                    guard let help = option.defaultText, let readme = row.defaultText,
                        let same = Self.sameDefault(help: help, readme: readme)
                    else { continue }
                    #expect(same, "\(command) \(option.name): --help says \(help), README \(readme)")
                }
            }
        }
    }
}
