print("shopfleet")
