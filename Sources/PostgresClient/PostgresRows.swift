import CLibPQ

/// The rows a statement returned, copied out of libpq's result (text format).
public struct PostgresRows: Sendable, Sequence {
    public let columns: [String]
    /// Rows affected (INSERT/UPDATE/DELETE), or rows returned.
    public let affectedRows: Int
    let values: [String?]
    public var count: Int { columns.isEmpty ? 0 : values.count / columns.count }

    init(affected: Int) {
        columns = []
        values = []
        affectedRows = affected
    }

    init(result: OpaquePointer) {
        let nColumns = Int(PQnfields(result))
        let nRows = Int(PQntuples(result))
        columns = (0..<nColumns).map { String(cString: PQfname(result, Int32($0))) }
        var values: [String?] = []
        values.reserveCapacity(nColumns * nRows)
        for row in 0..<Int32(nRows) {
            for column in 0..<Int32(nColumns) {
                if PQgetisnull(result, row, column) == 1 {
                    values.append(nil)
                } else {
                    values.append(String(cString: PQgetvalue(result, row, column)))
                }
            }
        }
        self.values = values
        affectedRows = nRows
    }

    public subscript(row: Int) -> PostgresRow { PostgresRow(rows: self, index: row) }

    public var first: PostgresRow? { count > 0 ? self[0] : nil }

    public func makeIterator() -> AnyIterator<PostgresRow> {
        var i = 0
        return AnyIterator {
            guard i < count else { return nil }
            defer { i += 1 }
            return self[i]
        }
    }
}

public struct PostgresRow: Sendable {
    let rows: PostgresRows
    let index: Int

    /// The raw text of a column, nil for NULL.
    public func text(_ column: Int) -> String? {
        rows.values[index * rows.columns.count + column]
    }

    /// Decodes column `column` (by position). A NULL decodes only into an Optional.
    public func decode<T: PostgresDecodable>(_ type: T.Type = T.self, _ column: Int) throws -> T {
        let name = column < rows.columns.count ? rows.columns[column] : "#\(column)"
        guard column < rows.columns.count else {
            throw PostgresError(.decoding, "no column \(column) (row has \(rows.columns.count))", host: "", port: 0)
        }
        guard let text = text(column) else {
            if let none = (Optional<Never>.none as Any) as? T { return none }
            if let optional = T.self as? any ExpressibleByNilLiteral.Type,
               let value = optional.init(nilLiteral: ()) as? T {
                return value
            }
            throw PostgresError(.decoding, "column '\(name)' is NULL; decode as \(T.self)?", host: "", port: 0)
        }
        do {
            return try T.decode(postgresText: text)
        } catch let failure as PostgresDecodingFailure {
            throw PostgresError(.decoding, "column '\(name)' as \(T.self): \(failure.reason)", host: "", port: 0)
        }
    }

    /// Decodes a column by name.
    public func decode<T: PostgresDecodable>(_ type: T.Type = T.self, _ column: String) throws -> T {
        guard let position = rows.columns.firstIndex(of: column) else {
            throw PostgresError(.decoding, "no column '\(column)' (has \(rows.columns.joined(separator: ", ")))", host: "", port: 0)
        }
        return try decode(type, position)
    }
}
