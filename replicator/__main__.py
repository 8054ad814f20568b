from replicator.memory import reuse_large_buffers

reuse_large_buffers()

from replicator.cli.main import main  # noqa: E402

raise SystemExit(main())
