/// Lower-case hex digits, as ASCII bytes: how digests and ids are written.
public enum HexDigits {
    /// The digit for a value of 0 to 15.
    @inlinable
    public static func digit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }
}

extension Sequence<UInt8> {
    /// The bytes as lower-case hex, two digits each: how digests and ids are written. Inlinable, so
    /// that a caller's concrete sequence gets a specialised loop writing straight into the string
    /// (contiguous bytes are read in place).
    @inlinable
    public var lowercaseHex: String {
        if let hex = withContiguousStorageIfAvailable(HexDigits.string) { return hex }
        return Array(self).withUnsafeBufferPointer(HexDigits.string)
    }
}

extension HexDigits {
    @inlinable
    static func string(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            for (index, byte) in bytes.enumerated() {
                out[2 * index] = digit(byte >> 4)
                out[2 * index + 1] = digit(byte & 15)
            }
            return bytes.count * 2
        }
    }
}
