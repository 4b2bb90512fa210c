internal import CMySQL
import Glibc

/// What one execution returned: rows (empty without a result set), affected rows and the insert id.
struct ExecutionOutcome {
    var rows: [MySQLRow]
    var affectedRows: UInt64
    var lastInsertID: UInt64
}

/// One server-side prepared statement, owned by the connection that prepared it.
final class PreparedStatement {
    let handle: UnsafeMutablePointer<MYSQL_STMT>
    let parameterCount: Int
    /// The connection's use counter when this statement last ran; the smallest is evicted first.
    var lastUse: UInt64 = 0
    /// The result buffers of the last execution, reused while the server describes the same columns.
    private var resultBuffers: ResultBuffers?
    private let parameters: ParameterBuffers

    // A string or binary column starts with a buffer of at most this many bytes; longer values are
    // re-read whole with mysql_stmt_fetch_column, so the cap costs a call, never data.
    static let initialStringBufferCap = 8 * 1024

    private init(handle: UnsafeMutablePointer<MYSQL_STMT>) {
        self.handle = handle
        self.parameterCount = Int(mysql_stmt_param_count(handle))
        self.parameters = ParameterBuffers(count: parameterCount)
    }

    /// Prepares `sql` on `mysql`; prepare-time messages quote only the SQL text, never bound values.
    static func prepare(_ sql: String, on mysql: UnsafeMutablePointer<MYSQL>) throws(MySQLError) -> PreparedStatement {
        guard let handle = mysql_stmt_init(mysql) else { throw MySQLConnection.error(of: mysql) }
        var text = sql
        let status = text.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { chars in
                mysql_stmt_prepare(handle, chars.baseAddress, UInt(chars.count))
            }
        }
        guard status == 0 else {
            let error = Self.error(of: handle, withholdServerMessage: false)
            mysql_stmt_close(handle)
            throw error
        }
        return PreparedStatement(handle: handle)
    }

    /// Frees the statement on the server and in the client; the connection calls this exactly once.
    func close() {
        mysql_stmt_close(handle)
    }

    /// Binds `values`, executes, and reads any result set whole.
    func execute(_ values: [MySQLValue]) throws(MySQLError) -> ExecutionOutcome {
        // The C API reads the parameter buffers during mysql_stmt_execute; the statement keeps them.
        defer { parameters.trim() }
        if !values.isEmpty {
            try parameters.fill(values)
            guard mysql_stmt_bind_param(handle, parameters.binds) == 0 else {
                throw Self.error(of: handle, withholdServerMessage: false)
            }
        }
        guard mysql_stmt_execute(handle) == 0 else {
            throw Self.error(of: handle, withholdServerMessage: true)
        }
        if mysql_stmt_field_count(handle) > 0 && columnNamesAreStale() {
            // Drops the unread rows so the connection stays in sync (mysql_stmt_reset, as after errors).
            mysql_stmt_reset(handle)
            throw MySQLError(
                code: .newStatementMetadata, message: "the result columns were renamed since the statement was prepared")
        }
        guard mysql_stmt_field_count(handle) > 0 else {
            let outcome = ExecutionOutcome(
                rows: [], affectedRows: mysql_stmt_affected_rows(handle), lastInsertID: mysql_stmt_insert_id(handle))
            try discardMoreResults()
            return outcome
        }
        defer { mysql_stmt_free_result(handle) }
        let rows = try fetchAll()
        let outcome = ExecutionOutcome(
            rows: rows, affectedRows: mysql_stmt_affected_rows(handle), lastInsertID: mysql_stmt_insert_id(handle))
        try discardMoreResults()
        return outcome
    }

    /// Whether the column names the server sent with this execution differ from the statement's.
    private func columnNamesAreStale() -> Bool {
        // After ALTER TABLE renames columns and keeps their count, the server re-prepares and sends the new column
        // definitions, but Connector/C copies only their type, length, flags, decimals and character set into the
        // statement's fields (mariadb_stmt.c, mthd_stmt_read_execute_response), so mysql_stmt_result_metadata keeps
        // the old names. After a successful execute the connection's fields are the ones just sent, or a copy of
        // the statement's when the server skipped unchanged metadata (MARIADB_CLIENT_CACHE_METADATA), so any
        // difference is a rename.
        guard let mysql = handle.pointee.mysql, let sent = mysql.pointee.fields, let kept = handle.pointee.fields,
            mysql.pointee.field_count == handle.pointee.field_count
        else { return false }
        for index in 0..<Int(handle.pointee.field_count) {
            let length = sent[index].name_length
            guard length == kept[index].name_length else { return true }
            guard length > 0 else { continue }
            guard let new = sent[index].name, let old = kept[index].name else { return true }
            if memcmp(new, old, Int(length)) != 0 { return true }
        }
        return false
    }

    /// Reads and drops the results after the first, which CALL sends (one per SELECT, then the procedure's status).
    private func discardMoreResults() throws(MySQLError) {
        // The C API requires mysql_stmt_next_result until it returns -1 before the connection takes another
        // command; otherwise the next one fails with CR_COMMANDS_OUT_OF_SYNC.
        while mysql_stmt_more_results(handle) != 0 {
            let status = mysql_stmt_next_result(handle)
            if status == -1 { return }
            guard status == 0 else { throw Self.error(of: handle, withholdServerMessage: true) }
        }
    }

    private func fetchAll() throws(MySQLError) -> [MySQLRow] {
        guard let metadata = mysql_stmt_result_metadata(handle) else {
            throw Self.error(of: handle, withholdServerMessage: true)
        }
        defer { mysql_free_result(metadata) }
        // Buffer the whole result client-side so the connection is free for the next command at once.
        guard mysql_stmt_store_result(handle) == 0 else {
            let error = Self.error(of: handle, withholdServerMessage: true)
            // An error among the rows (ER_SUBQUERY_NO_1_ROW, out of range, ...) leaves Connector/C's statement
            // waiting for rows the server never sends, so its next mysql_stmt_execute blocks reading them until
            // the read timeout; mysql_stmt_reset returns it to the prepared state, as the C API asks after errors.
            mysql_stmt_reset(handle)
            throw error
        }
        let count = Int(mysql_num_fields(metadata))
        guard count > 0, let fields = mysql_fetch_fields(metadata) else { return [] }
        let fieldList = UnsafeBufferPointer(start: fields, count: count)
        // Rows copy their values out, so the buffers can serve the next execution; a statement the server
        // re-prepared with other columns (after ALTER TABLE) gets new ones.
        let results: ResultBuffers
        if let cached = resultBuffers, cached.describes(fieldList) {
            results = cached
        } else {
            results = ResultBuffers(fields: fieldList)
            resultBuffers = results
        }
        guard mysql_stmt_bind_result(handle, results.binds) == 0 else {
            throw Self.error(of: handle, withholdServerMessage: false)
        }
        var rows: [MySQLRow] = []
        rows.reserveCapacity(Int(clamping: mysql_stmt_num_rows(handle)))
        while true {
            let status = mysql_stmt_fetch(handle)
            if status == MYSQL_NO_DATA { break }
            // MYSQL_DATA_TRUNCATED still delivers the row; ResultBuffers re-reads the cut columns.
            guard status == 0 || status == MYSQL_DATA_TRUNCATED else {
                throw Self.error(of: handle, withholdServerMessage: true)
            }
            rows.append(MySQLRow(columns: results.columns, values: try results.values(of: handle)))
        }
        return rows
    }

    /// The statement's last error; server messages of executions are withheld because they can quote
    /// bound values (ER_DUP_ENTRY does), while client-library messages never do.
    static func error(of handle: UnsafeMutablePointer<MYSQL_STMT>, withholdServerMessage: Bool) -> MySQLError {
        let code = MySQLErrorCode(rawValue: mysql_stmt_errno(handle))
        let sqlState = mysql_stmt_sqlstate(handle).map { String(cString: $0) } ?? "HY000"
        let serverMessage = mysql_stmt_error(handle).map { String(cString: $0) } ?? ""
        let isClientCode = (2000..<3000).contains(code.rawValue) || (5000..<6000).contains(code.rawValue)
        let message = withholdServerMessage && !isClientCode ? MySQLError.withheldMessage(for: code) : serverMessage
        // Only the key's name is kept of the message: the stores tell the duplicate they expect from another key's.
        let key = code == .duplicateEntry ? MySQLError.duplicateKeyName(inServerMessage: serverMessage) : nil
        return MySQLError(
            code: code, sqlState: sqlState.isEmpty ? "HY000" : sqlState, message: message, duplicateKey: key)
    }
}

/// The MYSQL_BIND array and value buffers of a statement's parameters, kept with the statement and filled
/// again for each execution: a slot per parameter for numbers and times, one arena for string and byte values.
private final class ParameterBuffers {
    let binds: UnsafeMutablePointer<MYSQL_BIND>
    private let count: Int
    private let lengths: UnsafeMutablePointer<UInt>
    private let slots: UnsafeMutableRawPointer
    private var arena: UnsafeMutableRawPointer
    private var arenaCapacity: Int
    private static let slotStride = max(MemoryLayout<MYSQL_TIME>.stride, 8)
    // An arena grown past this for long values is given back once their execution is over.
    private static let keptArenaCapacity = 64 * 1024

    init(count: Int) {
        self.count = count
        binds = .allocate(capacity: max(count, 1))
        binds.initialize(repeating: MYSQL_BIND(), count: max(count, 1))
        lengths = .allocate(capacity: max(count, 1))
        lengths.initialize(repeating: 0, count: max(count, 1))
        slots = .allocate(byteCount: max(count, 1) * Self.slotStride, alignment: 16)
        arenaCapacity = 256
        arena = .allocate(byteCount: arenaCapacity, alignment: 8)
    }

    deinit {
        arena.deallocate()
        slots.deallocate()
        lengths.deallocate()
        binds.deinitialize(count: max(count, 1))
        binds.deallocate()
    }

    /// Points the binds at `values`; the caller passed exactly `count` of them.
    /// - Throws: `invalidArgument` for a date-time with a field out of its range, which is sent to no server.
    func fill(_ values: [MySQLValue]) throws(MySQLError) {
        var arenaBytes = 0
        for value in values.prefix(count) {
            switch value {
            case .string(let text): arenaBytes += text.utf8.count
            case .bytes(let bytes): arenaBytes += bytes.count
            default: break
            }
        }
        if arenaBytes > arenaCapacity {
            arena.deallocate()
            arenaCapacity = arenaBytes
            arena = .allocate(byteCount: arenaCapacity, alignment: 8)
        }
        var arenaOffset = 0
        for (index, value) in values.prefix(count).enumerated() {
            binds[index] = MYSQL_BIND()
            let slot = slots + index * Self.slotStride
            switch value {
            case .null:
                binds[index].buffer_type = MYSQL_TYPE_NULL
            case .int64(let number):
                slot.storeBytes(of: number, as: Int64.self)
                binds[index].buffer_type = MYSQL_TYPE_LONGLONG
                binds[index].buffer = slot
                binds[index].is_unsigned = 0
            case .uint64(let number):
                slot.storeBytes(of: number, as: UInt64.self)
                binds[index].buffer_type = MYSQL_TYPE_LONGLONG
                binds[index].buffer = slot
                binds[index].is_unsigned = 1
            case .double(let number):
                slot.storeBytes(of: number, as: Double.self)
                binds[index].buffer_type = MYSQL_TYPE_DOUBLE
                binds[index].buffer = slot
            case .string(var text):
                let length = text.withUTF8 { bytes in copyToArena(UnsafeRawBufferPointer(bytes), at: arenaOffset) }
                bindArena(at: index, offset: arenaOffset, length: length, type: MYSQL_TYPE_STRING)
                arenaOffset += length
            case .bytes(let bytes):
                let length = bytes.withUnsafeBytes { copyToArena($0, at: arenaOffset) }
                bindArena(at: index, offset: arenaOffset, length: length, type: MYSQL_TYPE_BLOB)
                arenaOffset += length
            case .dateTime(let dateTime):
                guard Self.fitsDateTime(dateTime) else {
                    throw MySQLError(
                        code: .invalidArgument, message: "a date-time value has a field out of range (\(index + 1). value)")
                }
                var time = MYSQL_TIME()
                time.year = UInt32(clamping: dateTime.year)
                time.month = UInt32(clamping: dateTime.month)
                time.day = UInt32(clamping: dateTime.day)
                time.hour = UInt32(clamping: dateTime.hour)
                time.minute = UInt32(clamping: dateTime.minute)
                time.second = UInt32(clamping: dateTime.second)
                time.second_part = UInt(clamping: dateTime.microsecond)
                time.time_type = MYSQL_TIMESTAMP_DATETIME
                slot.storeBytes(of: time, as: MYSQL_TIME.self)
                binds[index].buffer_type = MYSQL_TYPE_DATETIME
                binds[index].buffer = slot
                binds[index].buffer_length = UInt(MemoryLayout<MYSQL_TIME>.size)
            }
        }
    }

    /// Whether every field of `dateTime` is within what DATETIME holds (zero dates and days past a month's end
    /// are the server's to judge, by its sql_mode).
    private static func fitsDateTime(_ dateTime: MySQLDateTime) -> Bool {
        // The binary protocol sends the year in 2 bytes, month to second in 1 byte each and the microseconds in 4
        // (MariaDB docs, COM_STMT_EXECUTE and PACKET_BINDATA), and the server stores a field it cannot take as the
        // zero date without an error even in strict mode: year 10000 or hour 24 became 0000-00-00 00:00:00, and
        // year 67560 (2024 + 65536) or minute 300 wrapped to 2024 and 44. DATETIME(6) ranges up to
        // '9999-12-31 23:59:59.999999' (MariaDB docs, DATETIME).
        (0...9999).contains(dateTime.year) && (0...12).contains(dateTime.month) && (0...31).contains(dateTime.day)
            && (0...23).contains(dateTime.hour) && (0...59).contains(dateTime.minute) && (0...59).contains(dateTime.second)
            && (0...999_999).contains(dateTime.microsecond)
    }

    /// Gives back an arena that long values grew beyond `keptArenaCapacity`; call once the execution is over.
    func trim() {
        guard arenaCapacity > Self.keptArenaCapacity else { return }
        arena.deallocate()
        arenaCapacity = 256
        arena = .allocate(byteCount: arenaCapacity, alignment: 8)
    }

    private func copyToArena(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Int {
        if let base = bytes.baseAddress, !bytes.isEmpty { (arena + offset).copyMemory(from: base, byteCount: bytes.count) }
        return bytes.count
    }

    private func bindArena(at index: Int, offset: Int, length: Int, type: enum_field_types) {
        lengths[index] = UInt(length)
        binds[index].buffer_type = type
        binds[index].buffer = arena + offset
        binds[index].buffer_length = UInt(length)
        binds[index].length = lengths + index
    }
}

/// The MYSQL_BIND array and buffers one result set is fetched into, sized from its metadata.
private final class ResultBuffers {
    private enum Kind {
        case signed, unsigned, double, dateTime, text, binary
    }

    let binds: UnsafeMutablePointer<MYSQL_BIND>
    let columns: [MySQLColumn]
    private let kinds: [Kind]
    private let signatures: [FieldSignature]
    private let count: Int
    private let lengths: UnsafeMutablePointer<UInt>
    private let nulls: UnsafeMutablePointer<my_bool>
    private let errors: UnsafeMutablePointer<my_bool>
    private let buffers: [UnsafeMutableRawPointer]

    /// What identifies a result column: its name and everything the bind was sized and typed from.
    private struct FieldSignature: Equatable {
        let type: UInt32
        let flags: UInt32
        let characterSet: UInt32
        let length: UInt
        let name: [UInt8]

        init(_ field: MYSQL_FIELD) {
            type = field.type.rawValue
            flags = field.flags
            characterSet = field.charsetnr
            length = field.length
            name = field.name.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(field.name_length))) } ?? []
        }

        func matches(_ field: MYSQL_FIELD) -> Bool {
            guard field.type.rawValue == type, field.flags == flags, field.charsetnr == characterSet,
                field.length == length, Int(field.name_length) == name.count
            else { return false }
            guard let fieldName = field.name else { return name.isEmpty }
            return name.withUnsafeBytes { stored in
                guard let base = stored.baseAddress else { return true }
                return memcmp(base, fieldName, stored.count) == 0
            }
        }
    }

    init(fields: UnsafeBufferPointer<MYSQL_FIELD>) {
        count = fields.count
        signatures = fields.map(FieldSignature.init)
        binds = .allocate(capacity: count)
        binds.initialize(repeating: MYSQL_BIND(), count: count)
        lengths = .allocate(capacity: count)
        lengths.initialize(repeating: 0, count: count)
        nulls = .allocate(capacity: count)
        nulls.initialize(repeating: 0, count: count)
        errors = .allocate(capacity: count)
        errors.initialize(repeating: 0, count: count)
        var columns: [MySQLColumn] = []
        var kinds: [Kind] = []
        for field in fields {
            let kind = Self.kind(of: field)
            let name = field.name.map { String(cString: $0) } ?? ""
            let isUnsigned = field.flags & UInt32(UNSIGNED_FLAG) != 0
            columns.append(
                MySQLColumn(name: name, fieldType: field.type.rawValue, isUnsigned: isUnsigned, isBinary: kind == .binary))
            kinds.append(kind)
        }
        self.columns = columns
        self.kinds = kinds
        var buffers: [UnsafeMutableRawPointer] = []
        buffers.reserveCapacity(count)
        for (index, field) in fields.enumerated() {
            buffers.append(
                Self.prepareBind(
                    binds + index, kind: kinds[index], declaredLength: Int(clamping: field.length),
                    length: lengths + index, isNull: nulls + index, error: errors + index))
        }
        self.buffers = buffers
    }

    /// Whether `fields` describe the columns these buffers were made for.
    func describes(_ fields: UnsafeBufferPointer<MYSQL_FIELD>) -> Bool {
        guard fields.count == signatures.count else { return false }
        for index in 0..<fields.count where !signatures[index].matches(fields[index]) { return false }
        return true
    }

    deinit {
        for buffer in buffers { buffer.deallocate() }
        errors.deallocate()
        nulls.deallocate()
        lengths.deallocate()
        binds.deinitialize(count: count)
        binds.deallocate()
    }

    private static func kind(of field: MYSQL_FIELD) -> Kind {
        switch field.type {
        case MYSQL_TYPE_TINY, MYSQL_TYPE_SHORT, MYSQL_TYPE_INT24, MYSQL_TYPE_LONG, MYSQL_TYPE_LONGLONG, MYSQL_TYPE_YEAR:
            return field.flags & UInt32(UNSIGNED_FLAG) != 0 ? .unsigned : .signed
        case MYSQL_TYPE_FLOAT, MYSQL_TYPE_DOUBLE:
            return .double
        case MYSQL_TYPE_DATE, MYSQL_TYPE_NEWDATE, MYSQL_TYPE_DATETIME, MYSQL_TYPE_TIMESTAMP:
            return .dateTime
        case MYSQL_TYPE_STRING, MYSQL_TYPE_VAR_STRING, MYSQL_TYPE_VARCHAR, MYSQL_TYPE_TINY_BLOB,
            MYSQL_TYPE_MEDIUM_BLOB, MYSQL_TYPE_LONG_BLOB, MYSQL_TYPE_BLOB, MYSQL_TYPE_BIT, MYSQL_TYPE_GEOMETRY:
            // Character set 63 is `binary`: VARBINARY, BLOB and BIT; text columns carry their own set.
            return field.charsetnr == 63 ? .binary : .text
        default:
            // DECIMAL, TIME, ENUM, SET, JSON and NULL read as text, which represents each exactly.
            return .text
        }
    }

    /// Types `bind` for `kind` and points it at a new zeroed buffer, which it returns, and at its flags.
    private static func prepareBind(
        _ bind: UnsafeMutablePointer<MYSQL_BIND>, kind: Kind, declaredLength: Int, length: UnsafeMutablePointer<UInt>,
        isNull: UnsafeMutablePointer<my_bool>, error: UnsafeMutablePointer<my_bool>
    ) -> UnsafeMutableRawPointer {
        let byteCount: Int
        switch kind {
        case .signed, .unsigned:
            bind.pointee.buffer_type = MYSQL_TYPE_LONGLONG
            bind.pointee.is_unsigned = kind == .unsigned ? 1 : 0
            byteCount = 8
        case .double:
            bind.pointee.buffer_type = MYSQL_TYPE_DOUBLE
            byteCount = 8
        case .dateTime:
            bind.pointee.buffer_type = MYSQL_TYPE_DATETIME
            byteCount = MemoryLayout<MYSQL_TIME>.stride
        case .text, .binary:
            bind.pointee.buffer_type = kind == .binary ? MYSQL_TYPE_BLOB : MYSQL_TYPE_STRING
            byteCount = min(max(declaredLength, 1), PreparedStatement.initialStringBufferCap)
        }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 8)
        buffer.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
        bind.pointee.buffer = buffer
        bind.pointee.buffer_length = UInt(byteCount)
        bind.pointee.length = length
        bind.pointee.is_null = isNull
        bind.pointee.error = error
        return buffer
    }

    /// Decodes the current row; string columns longer than their buffer are re-read whole.
    func values(of statement: UnsafeMutablePointer<MYSQL_STMT>) throws(MySQLError) -> [MySQLValue] {
        var values: [MySQLValue] = []
        values.reserveCapacity(count)
        for index in 0..<count {
            guard nulls[index] == 0 else {
                values.append(.null)
                continue
            }
            let buffer = buffers[index]
            switch kinds[index] {
            case .signed:
                values.append(.int64(buffer.load(as: Int64.self)))
            case .unsigned:
                values.append(.uint64(buffer.load(as: UInt64.self)))
            case .double:
                values.append(.double(buffer.load(as: Double.self)))
            case .dateTime:
                let time = buffer.load(as: MYSQL_TIME.self)
                values.append(
                    .dateTime(
                        MySQLDateTime(
                            year: Int(time.year), month: Int(time.month), day: Int(time.day), hour: Int(time.hour),
                            minute: Int(time.minute), second: Int(time.second), microsecond: Int(time.second_part))))
            case .text where Int(lengths[index]) <= Int(binds[index].buffer_length):
                // utf8mb4 is the connection character set, so text arrives as UTF-8; decoded in place.
                let text = UnsafeRawBufferPointer(start: buffer, count: Int(lengths[index]))
                values.append(.string(String(decoding: text, as: UTF8.self)))
            case .text:
                values.append(.string(String(decoding: try readBytes(at: index, statement: statement), as: UTF8.self)))
            case .binary:
                values.append(.bytes(try readBytes(at: index, statement: statement)))
            }
        }
        return values
    }

    private func readBytes(at index: Int, statement: UnsafeMutablePointer<MYSQL_STMT>) throws(MySQLError) -> [UInt8] {
        let length = Int(lengths[index])
        let capacity = Int(binds[index].buffer_length)
        if length <= capacity {
            return Array(UnsafeRawBufferPointer(start: buffers[index], count: length))
        }
        // The fetch cut this column (length holds its full size): fetch it again into a buffer that fits,
        // as the C API documents for MYSQL_DATA_TRUNCATED.
        var bytes = [UInt8](repeating: 0, count: length)
        var fetchedLength: UInt = 0
        var isNull: my_bool = 0
        var truncated: my_bool = 0
        let status = bytes.withUnsafeMutableBytes { target in
            withUnsafeMutablePointer(to: &fetchedLength) { fetchedLengthPointer in
                withUnsafeMutablePointer(to: &isNull) { isNullPointer in
                    withUnsafeMutablePointer(to: &truncated) { truncatedPointer in
                        var bind = MYSQL_BIND()
                        bind.buffer_type = binds[index].buffer_type
                        bind.buffer = target.baseAddress
                        bind.buffer_length = UInt(target.count)
                        bind.length = fetchedLengthPointer
                        bind.is_null = isNullPointer
                        bind.error = truncatedPointer
                        return mysql_stmt_fetch_column(statement, &bind, UInt32(index), 0)
                    }
                }
            }
        }
        guard status == 0 else { throw PreparedStatement.error(of: statement, withholdServerMessage: false) }
        return Array(bytes.prefix(Int(fetchedLength)))
    }
}
