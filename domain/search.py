"""Typed search attributes, so engineers can filter journeys in the Temporal UI."""

from temporalio.common import SearchAttributeKey

CAMPAIGN_ID = SearchAttributeKey.for_int("CampaignId")
RECIPIENT_EMAIL = SearchAttributeKey.for_keyword("RecipientEmail")
DRIP_STEP = SearchAttributeKey.for_int("DripStep")
DRIP_STATUS = SearchAttributeKey.for_keyword("DripStatus")

# What holds the journey's next message back, while it does: "send_window" or "frequency_cap"
# (e.g. `DripHeld = "frequency_cap"` in the Temporal UI); unset otherwise.
DRIP_HELD = SearchAttributeKey.for_keyword("DripHeld")

# The campaign version a journey runs (services/versions.py): set at its start, moved when it
# migrates to a newer one.
CAMPAIGN_VERSION = SearchAttributeKey.for_int("CampaignVersion")

ALL_KEYS = (CAMPAIGN_ID, RECIPIENT_EMAIL, DRIP_STEP, DRIP_STATUS, DRIP_HELD, CAMPAIGN_VERSION)
