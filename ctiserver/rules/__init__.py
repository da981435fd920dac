"""The routing-rules feature: the live rule set (hot reload, stored versions, rollback)
and the ``ctiserver rules …`` commands. The rule language itself is
:mod:`ctiserver.core.rules`, the IVR interpreter :mod:`ctiserver.core.ivr`.
"""
