import Testing
@testable import ClientRuntime
@Test func placeholder() {}
