"""The actor runtime: plain asyncio, no Django imports at module level.

:class:`~.host.ActorRuntime` hosts :class:`~.instance.ActorInstance`\\ s;
:class:`~.router.ActorRouter` resolves addresses and forwards calls;
:class:`~.committer.GroupCommitter` makes state durable in batches;
:class:`~.store.ActorStore` is what they need from storage.
"""
