public import Messaging

/// Internal to notifications: deliver one recorded notification its event's handler did not send:
/// a webhook call, or an email that failed then. Each is its own message, retried on its own, so a
/// failing webhook never sends an email twice.
public struct DeliverNotification: Command, Contract, Validatable {
    public static let type = "notifications.DeliverNotification.v1"
    public static let example = DeliverNotification(notificationID: 42)
    public var notificationID: Int
    public init(notificationID: Int) { self.notificationID = notificationID }
    public func validate() throws(ValidationFailure) {
        guard notificationID > 0 else { throw ValidationFailure("notificationID must be positive") }
    }
}

/// A notification went out: `channel` is `email` or `webhook`.
public struct NotificationSent: Event, Contract {
    public static let type = "notifications.NotificationSent.v1"
    public static let example = NotificationSent(orderID: PlaceOrder.example.orderID, event: OrderConfirmed.type, channel: "email",
                                                 recipient: "ada@example.com")
    public var orderID: String
    public var event: String
    public var channel: String
    public var recipient: String
    public init(orderID: String, event: String, channel: String, recipient: String) {
        self.orderID = orderID
        self.event = event
        self.channel = channel
        self.recipient = recipient
    }
}
