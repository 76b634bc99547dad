public import Messaging

/// Every command, event and query of every domain: the fleet's public language. Each type is
/// `<domain>.<Name>.v<N>` and conforms to `Contract`, with an example that fills every field.
///
/// `contracts/snapshot.json` records each one's JSON shape; a test fails when a change would break
/// a reader or writer of messages already in flight. A breaking change is a new version (a new
/// type beside the old one), never an edit.
public enum ContractCatalog {
    public static let all: [any Contract.Type] = [
        // catalog
        UpsertProduct.self, DeactivateProduct.self, ProductUpserted.self, ProductDeactivated.self, GetProduct.self, GetProducts.self,
        // inventory
        ReserveStock.self, CommitReservation.self, ReleaseReservation.self, AdjustStock.self, StockReserved.self,
        StockReservationFailed.self, ReservationCommitted.self, ReservationCommitFailed.self, ReservationReleased.self,
        StockAdjusted.self, StockAvailabilityChanged.self, GetStock.self,
        // search
        SearchProducts.self,
        // cart
        GetCart.self, SetCartLine.self, RemoveCartLine.self, ClearCart.self, MergeCarts.self, CheckoutCart.self,
        // identity
        RegisterCustomer.self, GetCredentials.self, StartSession.self, RefreshSession.self, EndSession.self, CustomerRegistered.self,
        // payments
        AuthorizePayment.self, CapturePayment.self, VoidPayment.self, RefundPayment.self, PaymentAuthorized.self,
        PaymentDeclined.self, PaymentCaptured.self, PaymentVoided.self, PaymentRefunded.self, PaymentOperationFailed.self,
        // orders
        PlaceOrder.self, CancelOrder.self, RetryOrderSaga.self, OrderPlaced.self, OrderConfirmed.self, OrderCompleted.self,
        OrderCancelled.self, OrderCancellationRejected.self, GetOrder.self, ListCustomerOrders.self,
        ListSagas.self, ListStuckSagas.self, GetSagaTimeline.self, GetSagaDefinition.self,
        // notifications
        DeliverNotification.self, NotificationSent.self,
        // the dead-letter store
        ListDeadLetters.self, ListDeadLetterGroups.self, GetDeadLetter.self, CountWaitingDeadLetters.self, ReplayDeadLetters.self,
        DiscardDeadLetters.self,
    ]
}
