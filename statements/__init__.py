"""Bank statements in: MT940 and ISO 20022 camt.053 files as signed ``bank-statement`` events."""
