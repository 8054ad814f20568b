from replicator.cli.main import main

raise SystemExit(main())
