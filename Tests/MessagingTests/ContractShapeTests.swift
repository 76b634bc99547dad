import FoundationEssentials
@testable import Messaging
import Testing

private struct PlaceV1: Contract {
    static let type = "test.Place.v1"
    struct Line: Codable, Sendable { var sku: String; var quantity: Int }
    var customer: String
    var lines: [Line]
    var note: String?
    static let example = PlaceV1(customer: "c-1", lines: [Line(sku: "A", quantity: 2)], note: "leave at door")
}

/// PlaceV1 with a field removed.
private struct PlaceRemoved: Contract {
    static let type = "test.Place.v1"
    var lines: [PlaceV1.Line]
    var note: String?
    static let example = PlaceRemoved(lines: [PlaceV1.Line(sku: "A", quantity: 2)], note: "x")
}

/// PlaceV1 with a new optional field and a nested type change.
private struct PlaceAddedOptional: Contract {
    static let type = "test.Place.v1"
    var customer: String
    var lines: [PlaceV1.Line]
    var note: String?
    var coupon: String?
    static let example = PlaceAddedOptional(customer: "c", lines: [PlaceV1.Line(sku: "A", quantity: 1)], note: "n", coupon: "X")
}

private struct PlaceQuantityText: Contract {
    static let type = "test.Place.v1"
    struct Line: Codable, Sendable { var sku: String; var quantity: String }
    var customer: String
    var lines: [Line]
    var note: String?
    static let example = PlaceQuantityText(customer: "c", lines: [Line(sku: "A", quantity: "2")], note: "n")
}

@Suite("Contract shapes")
struct ContractShapeTests {
    @Test func shapeRecordsTypesAndWhatIsRequired() throws {
        let shape = try JSONShape.of(PlaceV1.self)
        guard case .object(let fields) = shape else { Issue.record("not an object"); return }
        #expect(fields["customer"] == .init(shape: .string, required: true))
        #expect(fields["note"] == .init(shape: .string, required: false))
        guard case .array(let element?) = fields["lines"]?.shape, case .object(let line) = element else {
            Issue.record("lines is not an array of objects"); return
        }
        #expect(line["quantity"] == .init(shape: .integer, required: true))
    }

    @Test func removingAFieldOrChangingItsTypeIsBreaking() throws {
        let old = try ContractSnapshot([PlaceV1.self])
        let removed = old.problems(with: try ContractSnapshot([PlaceRemoved.self]))
        #expect(removed.count == 1 && removed[0].contains("customer was removed") && removed[0].contains("add a new version"))
        let retyped = old.problems(with: try ContractSnapshot([PlaceQuantityText.self]))
        #expect(retyped.count == 1 && retyped[0].contains("lines[].quantity changed from integer to string"))
    }

    @Test func addingAnOptionalFieldIsCompatibleButMustBeRecorded() throws {
        let old = try ContractSnapshot([PlaceV1.self])
        let problems = old.problems(with: try ContractSnapshot([PlaceAddedOptional.self]))
        #expect(problems == ["test.Place.v1: compatible change not recorded; run `shopfleet contracts snapshot`"])
        #expect(old.problems(with: try ContractSnapshot([PlaceV1.self])) == [])
    }

    @Test func snapshotJSONRoundTrips() throws {
        let snapshot = try ContractSnapshot([PlaceV1.self])
        #expect(try ContractSnapshot.decode(Data(try snapshot.json().utf8)) == snapshot)
    }
}
