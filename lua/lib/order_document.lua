-- order_document.lua — shared by the scripts that write the lifecycle fields of an order
-- document; reservation/scripts.py splices it in where a script has an include line naming it.
-- Documents written by reserve.lua (and by versions before the lifecycle) stop at field 21
-- (fingerprint); extend gives fields 21-31 their defaults so a script can set them.
-- Layout: lua/ship.lua.
local function extend(document)
  local defaults = {[21] = '', [23] = '', [24] = 0, [25] = 0, [26] = 0, [27] = '', [28] = 0, [29] = false, [30] = 0}
  for index = 21, 31 do
    if document[index] == nil then
      if index == 22 or index == 31 then document[index] = {} else document[index] = defaults[index] end
    end
  end
end
