"""Typed search attributes, so engineers can filter journeys in the Temporal UI."""

from temporalio.common import SearchAttributeKey

CAMPAIGN_ID = SearchAttributeKey.for_int("CampaignId")
RECIPIENT_EMAIL = SearchAttributeKey.for_keyword("RecipientEmail")
DRIP_STEP = SearchAttributeKey.for_int("DripStep")
DRIP_STATUS = SearchAttributeKey.for_keyword("DripStatus")

ALL_KEYS = (CAMPAIGN_ID, RECIPIENT_EMAIL, DRIP_STEP, DRIP_STATUS)
