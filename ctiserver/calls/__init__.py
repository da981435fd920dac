"""The calls feature: route each inbound call and follow it until it ends.

``routing`` decides (rules, CRM, IVR) and queues the caller; ``tracker`` follows the call
through the ACD's offers and Asterisk's legs; ``phones`` keeps agents' phones' states;
``fallback`` keeps app_queue's fallback queue's members in step with the agents.
They reach Asterisk, the ACD, the rules and the screen-pops through ``ports``.
"""
