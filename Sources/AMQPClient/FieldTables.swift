import CRabbitMQ

/// Conversions between Swift values and rabbitmq-c's tables and properties. C-side values are
/// allocated in a scratch pool that the caller recycles after the call that used them.
enum CValues {
    static func bytes(_ string: String, _ pool: UnsafeMutablePointer<amqp_pool_t>) -> amqp_bytes_t {
        bytes(Array(string.utf8), pool)
    }

    static func bytes(_ data: [UInt8], _ pool: UnsafeMutablePointer<amqp_pool_t>) -> amqp_bytes_t {
        if data.isEmpty { return shopfleet_amqp_empty_bytes() }
        var out = amqp_bytes_t()
        amqp_pool_alloc_bytes(pool, data.count, &out)
        data.withUnsafeBytes { src in _ = memcpy(out.bytes, src.baseAddress!, data.count) }
        return out
    }

    static func table(_ table: AMQPTable?, _ pool: UnsafeMutablePointer<amqp_pool_t>) -> amqp_table_t {
        guard let table, !table.isEmpty else { return shopfleet_amqp_empty_table() }
        let entries = amqp_pool_alloc(pool, MemoryLayout<amqp_table_entry_t>.stride * table.count)!
            .bindMemory(to: amqp_table_entry_t.self, capacity: table.count)
        // Sorted so that the same table always encodes the same way.
        for (i, (key, value)) in table.sorted(by: { $0.key < $1.key }).enumerated() {
            entries[i] = amqp_table_entry_t(key: bytes(key, pool), value: fieldValue(value, pool))
        }
        return amqp_table_t(num_entries: Int32(table.count), entries: entries)
    }

    static func fieldValue(_ value: AMQPFieldValue, _ pool: UnsafeMutablePointer<amqp_pool_t>) -> amqp_field_value_t {
        var v = amqp_field_value_t()
        func kind(_ k: amqp_field_value_kind_t) -> UInt8 { UInt8(k.rawValue) }
        switch value {
        case .bool(let b): v.kind = kind(AMQP_FIELD_KIND_BOOLEAN); v.value.boolean = b ? 1 : 0
        case .int(let i): v.kind = kind(AMQP_FIELD_KIND_I64); v.value.i64 = i
        case .double(let d): v.kind = kind(AMQP_FIELD_KIND_F64); v.value.f64 = d
        case .string(let s): v.kind = kind(AMQP_FIELD_KIND_UTF8); v.value.bytes = bytes(s, pool)
        case .bytes(let b): v.kind = kind(AMQP_FIELD_KIND_BYTES); v.value.bytes = bytes(b, pool)
        case .timestamp(let t): v.kind = kind(AMQP_FIELD_KIND_TIMESTAMP); v.value.u64 = t
        case .table(let t): v.kind = kind(AMQP_FIELD_KIND_TABLE); v.value.table = table(t, pool)
        case .void: v.kind = kind(AMQP_FIELD_KIND_VOID)
        case .array(let items):
            v.kind = kind(AMQP_FIELD_KIND_ARRAY)
            let entries = amqp_pool_alloc(pool, MemoryLayout<amqp_field_value_t>.stride * max(1, items.count))!
                .bindMemory(to: amqp_field_value_t.self, capacity: max(1, items.count))
            for (i, item) in items.enumerated() { entries[i] = fieldValue(item, pool) }
            v.value.array = amqp_array_t(num_entries: Int32(items.count), entries: entries)
        }
        return v
    }

    static func properties(_ p: AMQPProperties, _ pool: UnsafeMutablePointer<amqp_pool_t>) -> amqp_basic_properties_t {
        var c = amqp_basic_properties_t()
        var flags: UInt32 = 0
        func set(_ value: String?, _ flag: Int32, _ assign: (amqp_bytes_t) -> Void) {
            guard let value else { return }
            assign(bytes(value, pool))
            flags |= UInt32(flag)
        }
        set(p.contentType, 1 << 15) { c.content_type = $0 }
        set(p.contentEncoding, 1 << 14) { c.content_encoding = $0 }
        if let headers = p.headers { c.headers = table(headers, pool); flags |= 1 << 13 }
        c.delivery_mode = p.persistent ? 2 : 1
        flags |= 1 << 12
        if let priority = p.priority { c.priority = priority; flags |= 1 << 11 }
        set(p.correlationID, 1 << 10) { c.correlation_id = $0 }
        set(p.replyTo, 1 << 9) { c.reply_to = $0 }
        set(p.expiration, 1 << 8) { c.expiration = $0 }
        set(p.messageID, 1 << 7) { c.message_id = $0 }
        if let timestamp = p.timestamp { c.timestamp = timestamp; flags |= 1 << 6 }
        set(p.type, 1 << 5) { c.type = $0 }
        set(p.userID, 1 << 4) { c.user_id = $0 }
        set(p.appID, 1 << 3) { c.app_id = $0 }
        c._flags = flags
        return c
    }

    // MARK: C to Swift

    static func string(_ b: amqp_bytes_t) -> String {
        guard b.len > 0, let base = b.bytes else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: base, count: b.len), as: UTF8.self)
    }

    static func array(_ b: amqp_bytes_t) -> [UInt8] {
        guard b.len > 0, let base = b.bytes else { return [] }
        return Array(UnsafeRawBufferPointer(start: base, count: b.len))
    }

    static func table(_ t: amqp_table_t) -> AMQPTable {
        var out: AMQPTable = [:]
        guard t.num_entries > 0, let entries = t.entries else { return out }
        for i in 0..<Int(t.num_entries) {
            out[string(entries[i].key)] = value(entries[i].value)
        }
        return out
    }

    static func value(_ v: amqp_field_value_t) -> AMQPFieldValue {
        switch UInt32(v.kind) {
        case AMQP_FIELD_KIND_BOOLEAN.rawValue: return .bool(v.value.boolean != 0)
        case AMQP_FIELD_KIND_I8.rawValue: return .int(Int64(v.value.i8))
        case AMQP_FIELD_KIND_U8.rawValue: return .int(Int64(v.value.u8))
        case AMQP_FIELD_KIND_I16.rawValue: return .int(Int64(v.value.i16))
        case AMQP_FIELD_KIND_U16.rawValue: return .int(Int64(v.value.u16))
        case AMQP_FIELD_KIND_I32.rawValue: return .int(Int64(v.value.i32))
        case AMQP_FIELD_KIND_U32.rawValue: return .int(Int64(v.value.u32))
        case AMQP_FIELD_KIND_I64.rawValue: return .int(v.value.i64)
        case AMQP_FIELD_KIND_U64.rawValue: return .int(Int64(bitPattern: v.value.u64))
        case AMQP_FIELD_KIND_F32.rawValue: return .double(Double(v.value.f32))
        case AMQP_FIELD_KIND_F64.rawValue: return .double(v.value.f64)
        case AMQP_FIELD_KIND_UTF8.rawValue: return .string(string(v.value.bytes))
        case AMQP_FIELD_KIND_BYTES.rawValue: return .bytes(array(v.value.bytes))
        case AMQP_FIELD_KIND_TIMESTAMP.rawValue: return .timestamp(v.value.u64)
        case AMQP_FIELD_KIND_TABLE.rawValue: return .table(table(v.value.table))
        case AMQP_FIELD_KIND_ARRAY.rawValue:
            let a = v.value.array
            guard a.num_entries > 0, let entries = a.entries else { return .array([]) }
            return .array((0..<Int(a.num_entries)).map { value(entries[$0]) })
        case AMQP_FIELD_KIND_DECIMAL.rawValue:
            let d = v.value.decimal
            var scale = 1.0
            for _ in 0..<d.decimals { scale *= 10 }
            return .double(Double(d.value) / scale)
        default: return .void
        }
    }

    static func properties(_ c: amqp_basic_properties_t) -> AMQPProperties {
        let f = c._flags
        func get(_ flag: UInt32, _ b: amqp_bytes_t) -> String? { f & flag != 0 ? string(b) : nil }
        return AMQPProperties(
            contentType: get(1 << 15, c.content_type),
            contentEncoding: get(1 << 14, c.content_encoding),
            headers: f & (1 << 13) != 0 ? table(c.headers) : nil,
            persistent: f & (1 << 12) != 0 && c.delivery_mode == 2,
            priority: f & (1 << 11) != 0 ? c.priority : nil,
            correlationID: get(1 << 10, c.correlation_id),
            replyTo: get(1 << 9, c.reply_to),
            expiration: get(1 << 8, c.expiration),
            messageID: get(1 << 7, c.message_id),
            timestamp: f & (1 << 6) != 0 ? c.timestamp : nil,
            type: get(1 << 5, c.type),
            userID: get(1 << 4, c.user_id),
            appID: get(1 << 3, c.app_id))
    }
}
