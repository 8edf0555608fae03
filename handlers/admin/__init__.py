"""The admin area (signed-in HTML pages), one job per module.

    pages      list, upload, detail, delete and the test calls (handlers)
    rotation   CSR, next, promote, rollback, discard (handlers)
    forms      multipart posts read into API bodies; which field an error belongs beside
    present    view-models: rows, expiry status, slots, last calls, what an identity trusts
    explain    what a failed test call means and what to check, per error code
"""
