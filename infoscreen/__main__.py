from infoscreen.cli import main

raise SystemExit(main())
