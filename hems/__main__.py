from hems.cli import main

raise SystemExit(main())
